"""Secrets never shown, connections that cannot hang, and configuration errors that name the file.

Issue 15, "Secrets, hangs and clear errors": every password / store key is masked wherever
joinflow shows text (reprs, errors, logs, CLI output, tracebacks); a server that accepts and never
answers is given up on after ``database.connect_timeout``; ``database.read_timeout`` is opt-in;
a malformed ``datajoint.json`` / ``joinflow.toml`` raises a ConfigError naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import traceback
import uuid
from pathlib import Path

import pytest

import joinflow as dj
from joinflow import cli, settings, testing
from joinflow.errors import ConfigError, DataJointError, LostConnectionError, QueryError


def _secret() -> str:
    """A password seen by no other test (the masking of known secrets is process-wide)."""
    return f"S3cr3t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def bare_config():
    return settings.Config(load_environment=False, search_file=False)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in settings.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # stop the file search at this folder
    return tmp_path


# -- secrets ----------------------------------------------------------------------------------------
def test_config_reprs_mask_every_secret(bare_config):
    url_pw, password, s3_secret, access, token = _secret(), _secret(), _secret(), _secret(), _secret()
    cfg = bare_config
    cfg["database.url"] = f"postgresql://alice:{url_pw}@db.example:5432/lab"
    cfg["database.password"] = password
    cfg["stores"] = {"default": "s3", "s3": {"protocol": "s3", "endpoint": "s3.example", "bucket": "b",
                                             "access_key": access, "secret_key": s3_secret,
                                             "options": {"token": token}, "token_length": 8}}
    shown = [repr(cfg), str(cfg), repr(cfg.database), str(cfg.database), repr(cfg["stores"]), str(cfg.stores),
             repr(cfg["stores"]["s3"]), repr(cfg.copy()), repr(cfg.stores["s3"]["options"])]
    with dj.config.override(database__password=password):
        shown.append(repr(dj.config))
        shown.append(repr(dj.config.database))
    for text in shown:
        for secret in (url_pw, password, s3_secret, access, token):
            assert secret not in text, text
    assert "db.example" in repr(cfg) and "alice" in repr(cfg.database) and "'token_length': 8" in repr(cfg)
    # the values themselves are untouched: the storage layer and the connection read them
    assert cfg["database.password"] == password and cfg["stores"]["s3"]["secret_key"] == s3_secret
    assert cfg.get_store_spec("s3")["options"]["token"] == token


def test_errors_logs_and_tracebacks_mask_secrets(caplog):
    password = _secret()
    url = f"mysql://bob:{password}@db.example:3306/lab"
    error = DataJointError(f"failed on {url}")
    assert password not in str(error) and "bob:***@db.example" in str(error)
    try:
        raise error
    except DataJointError:
        assert password not in traceback.format_exc()
    settings.remember_secret(password)  # once joinflow was given it, the bare value is masked too
    assert password not in str(DataJointError(f"server said: password {password} rejected"))
    with caplog.at_level(logging.INFO, logger="joinflow"):
        logging.getLogger("joinflow").warning("Reconnecting to %s (token=%s)", url, "tok-value-123")
    assert password not in caplog.text and "tok-value-123" not in caplog.text and "db.example" in caplog.text


def test_bad_database_url_names_the_setting_without_the_password(bare_config):
    password = _secret()
    with pytest.raises(DataJointError, match="database.url") as failure:
        dj.Connection(url=f"postgresql://alice:{password}@host:notaport/db", config=bare_config)
    assert password not in str(failure.value)


def _run_cli(capsys, *args) -> tuple[int, str]:
    """cli.main in this process; what ``--database-url`` sets for the process (dj.config, the
    environment, the global connection) is put back afterwards, so later tests see their own."""
    from joinflow import connection as connection_module

    runtime = dj.config._runtime
    had_url, url = "database.url" in runtime, runtime.get("database.url")
    env = os.environ.get("JOINFLOW_DATABASE_URL")
    singleton = connection_module._singleton
    try:
        code = cli.main(list(args))
    finally:
        if had_url:
            runtime["database.url"] = url
        else:
            runtime.pop("database.url", None)
        if env is None:
            os.environ.pop("JOINFLOW_DATABASE_URL", None)
        else:
            os.environ["JOINFLOW_DATABASE_URL"] = env
        connection_module._singleton = singleton
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_never_prints_a_secret(capsys, monkeypatch, tmp_path):
    password = _secret()
    outputs = []
    for fmt in ([], ["--json"]):
        # a URL that does not parse (exit 2), a server that refuses (exit 1), on every command form
        code, text = _run_cli(capsys, *fmt, "--database-url", f"postgresql://alice:{password}@host:notaport/db",
                              "status", "x")
        assert code == 2 and "alice:***@host" in text
        outputs.append(text)
        for scheme in ("postgresql", "mysql"):
            code, text = _run_cli(capsys, *fmt, "--database-url", f"{scheme}://alice:{password}@127.0.0.1:1/db",
                                  "schema", "list")
            assert code == 1 and "127.0.0.1:1" in text
            outputs.append(text)
        code, text = _run_cli(capsys, "copy", *fmt, "--from", f"postgresql://alice:{password}@h:x/db",
                              "--to", f"sqlite:///{tmp_path / 'x.db'}", "s")
        assert code == 1
        outputs.append(text)

    # `joinflow copy` failing with an unexpected error: its traceback, masked, and exit code 1
    def failing_copy(mapping, source, target, **kwargs):
        raise RuntimeError(f"lost {source} while writing (password={password})")

    monkeypatch.setattr("joinflow.copy.copy_schemas", failing_copy)
    cli_json_out = []
    for fmt in ([], ["--json"]):
        code = cli.main(["copy", *fmt, "--from", f"mysql://carol:{password}@src.example/db",
                         "--to", f"sqlite:///{tmp_path / 'y.db'}", "s"])
        out = capsys.readouterr()
        cli_json_out.append(out.out)
        text = out.out + out.err
        assert code == 1 and "Traceback" in out.err and "RuntimeError" in text and "carol:***@src.example" in text
        outputs.append(text)
    cli_json_out.reverse()
    assert json.loads(capsys.readouterr().out or cli_json_out[0])["exit_code"] == 1
    for text in outputs:
        assert password not in text, text


# -- timeouts -----------------------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A port that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for sock in held:
        sock.close()


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_connect_gives_up_on_a_server_that_never_answers(scheme, silent_server, bare_config):
    password = _secret()
    bare_config["database.connect_timeout"] = 1
    outcome = []

    def attempt():
        try:
            dj.Connection(url=f"{scheme}://alice:{password}@127.0.0.1:{silent_server}/db", config=bare_config)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)  # a guard against a hang, far above the 1-2 s it takes
    assert outcome, "connect() hung on a server that never answers"
    error = outcome[0]
    assert isinstance(error, LostConnectionError), error
    message = str(error)
    assert f"127.0.0.1:{silent_server}" in message and "database.connect_timeout" in message
    assert password not in message


def test_timeout_settings_are_validated(clean_env, monkeypatch, bare_config):
    assert settings.DEFAULTS["database.connect_timeout"] == 10 and settings.DEFAULTS["database.read_timeout"] is None
    for bad in (0, -1, "abc", True, float("inf")):
        with pytest.raises(ConfigError, match="database.connect_timeout"):
            bare_config["database.connect_timeout"] = bad
    with pytest.raises(ConfigError, match="database.read_timeout"):
        bare_config["database.read_timeout"] = 0
    bare_config["database.read_timeout"] = "none"
    assert bare_config["database.read_timeout"] is None
    bare_config["database.connect_timeout"] = "2.5"
    assert bare_config["database.connect_timeout"] == 2.5
    monkeypatch.setenv("JOINFLOW_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("JOINFLOW_READ_TIMEOUT", "600")
    cfg = settings.Config()
    assert cfg["database.connect_timeout"] == 3 and cfg["database.read_timeout"] == 600
    monkeypatch.setenv("JOINFLOW_READ_TIMEOUT", "-5")
    with pytest.raises(ConfigError, match="JOINFLOW_READ_TIMEOUT"):
        settings.Config()["database.host"]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_read_timeout_is_opt_in_and_names_the_setting(backend, tmp_path):
    url = testing.database_url(backend, tmp_path)
    sleep = "SELECT pg_sleep({})" if backend == "postgresql" else "SELECT SLEEP({})"
    cfg = dj.config.copy()
    cfg["database.connect_timeout"] = 1
    with dj.Connection(url=url, config=cfg) as conn:  # by default a statement may run longer than that
        if backend == "mysql":  # (the handshake's read timeout must not stay on the session)
            conn.query(sleep.format(1.2))
        else:
            assert conn.query("SHOW statement_timeout")[0][0] == "0"
    with dj.Connection(url=f"{url}{'&' if '?' in url else '?'}read_timeout=0.5", config=cfg) as conn:
        with pytest.raises((LostConnectionError, QueryError), match="database.read_timeout = 0.5 s"):
            conn.query(sleep.format(3))
        assert conn.query("SELECT 1")[0][0] == 1  # the connection is usable again
        assert "read_timeout=0.5" in str(conn.url)  # a connection made from conn.url has it too


# -- malformed configuration files -----------------------------------------------------------------------
BROKEN = {
    "datajoint.json": '{\n  "database": {\n    "host": "db.example"\n    "port": 3306\n  }\n}\n',
    "joinflow.toml": '[database]\nhost = "db.example"\nport = = 3306\n',
}
BROKEN_LINE = {"datajoint.json": "line 4", "joinflow.toml": "line 3"}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_malformed_config_file_names_the_file_and_line(name, clean_env, monkeypatch):
    path = clean_env / name
    path.write_text(BROKEN[name])
    cfg = settings.Config()  # as at `import joinflow`: no raise here ...
    for use in (lambda: cfg["database.host"], lambda: cfg.database.host, lambda: cfg.copy()["safemode"],
                lambda: dj.Connection(config=cfg)):
        with pytest.raises(ConfigError) as failure:  # ... but at every use, loud, naming file and line
            use()
        assert str(path) in str(failure.value) and BROKEN_LINE[name] in str(failure.value)
    assert "unusable" in repr(cfg) and str(path) in repr(cfg)
    with pytest.raises(ConfigError, match=BROKEN_LINE[name]):  # an explicit load raises at once
        settings.Config(load_environment=False, search_file=False).load(path)
    monkeypatch.setenv("DJ_IGNORE_CONFIG_FILE", "1")
    assert settings.Config()["database.host"] == "localhost"
    good = clean_env / "good.json"
    good.write_text(json.dumps({"database": {"host": "fixed"}}))
    cfg.load(good)
    assert cfg["database.host"] == "fixed"


def test_bad_values_in_file_or_environment_name_their_source(clean_env, monkeypatch):
    (clean_env / "datajoint.json").write_text(json.dumps({"database": {"port": "abc"}}))
    with pytest.raises(ConfigError, match=r"datajoint\.json.*database\.port"):
        settings.Config()["database.host"]
    (clean_env / "datajoint.json").unlink()
    monkeypatch.setenv("DJ_PORT", "not-a-port")
    cfg = settings.Config()
    with pytest.raises(ConfigError, match="DJ_PORT"):
        cfg["database.host"]
    good = clean_env / "good.json"
    good.write_text("{}")
    cfg.load(good)  # a good file does not make up for a bad environment variable
    with pytest.raises(ConfigError, match="DJ_PORT"):
        cfg["database.host"]


def test_import_with_a_malformed_config_file_is_loud(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "joinflow.toml").write_text(BROKEN["joinflow.toml"])
    script = (
        "import sys\n"
        "import joinflow as dj\n"
        "from joinflow import cli\n"
        "print('imported')\n"
        "print('cli exit', cli.main(['schema', 'list']))\n"
        "dj.config['database.host']\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in settings.ENV_VARS}
    core = str(Path(dj.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [core, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert "imported" in done.stdout and "cli exit 1" in done.stdout
    cli_message = done.stderr.split("Traceback")[0]
    assert f"joinflow: The configuration file {tmp_path / 'joinflow.toml'}" in cli_message
    assert "line 3" in cli_message
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("joinflow.errors.ConfigError") and "joinflow.toml" in last and "line 3" in last


def test_job_table_never_stores_a_secret(schema):
    password = _secret()

    @schema
    class Recording(dj.Manual):
        definition = """
        recording_id : int32
        """

    @schema
    class Upload(dj.Computed):
        definition = """
        -> Recording
        """

        def make(self, key):
            raise RuntimeError(f"cannot reach postgresql://lab:{password}@archive.example/raw")

    Recording.insert1({"recording_id": 1})
    result = Upload.populate(reserve_jobs=True, suppress_errors=True)
    assert len(result["error_list"]) == 1
    row = Upload.jobs.errors.fetch1()
    assert "lab:***@archive.example" in row["error_message"] and password not in row["error_message"]
    assert b"RuntimeError" in row["error_stack"] and password.encode() not in row["error_stack"]
