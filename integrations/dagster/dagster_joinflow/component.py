"""A Dagster component (``dg``) for a joinflow pipeline, configured in ``defs.yaml``.

```bash
dg scaffold defs dagster_joinflow.JoinflowPipelineComponent lcms --module lcms.pipeline
dg list defs
```

``defs/lcms/defs.yaml``::

    type: dagster_joinflow.JoinflowPipelineComponent
    attributes:
      module: lcms.pipeline            # or: manifest: pipeline.json (next to this file)
      key_prefix: [lab]                # optional: translator settings
      group_name: lcms
      select: "+RunQC"                 # joinflow selectors (select / exclude / settings)
      partition_attributes: {Acquisition: sample_id}
      shards: {DetectedPeaks: 4}       # parallel shard ops for one table
      sensor: true

The component builds the same definitions as :func:`build_joinflow_assets` (one asset per
table, dependencies from the foreign keys, ``no_job_errors`` checks), the resource the
assets run through (:class:`JoinflowResource`) and, if asked, the sensor.
"""

# no "from __future__ import annotations": the component's fields are read by pydantic / Dagster

import inspect
from pathlib import Path
from typing import Optional, Union

import dagster as dg
from joinflow.pipeline import Pipeline, TableNode
from pydantic import BaseModel, Field

from .assets import build_joinflow_assets
from .resource import JoinflowResource
from .sensor import build_joinflow_sensor
from .translator import DagsterJoinflowTranslator

DEFAULT_DATABASE_URL_ENV = "JOINFLOW_DATABASE_URL"


class ComponentTranslator(DagsterJoinflowTranslator):
    """The default translator plus the component's ``key_prefix`` and ``group_name``."""

    def __init__(self, *, key_prefix=(), group_name: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self._key_prefix = list(key_prefix)
        self._group_name = group_name

    def get_asset_key(self, node: TableNode) -> dg.AssetKey:
        return super().get_asset_key(node).with_prefix(self._key_prefix)

    def get_group_name(self, node: TableNode) -> Optional[str]:
        return self._group_name if self._group_name is not None else super().get_group_name(node)


class JoinflowScaffoldParams(BaseModel):
    """``dg scaffold defs dagster_joinflow.JoinflowPipelineComponent PATH --module M`` (or ``--manifest F``)."""

    module: Optional[str] = None
    manifest: Optional[str] = None


class JoinflowPipelineScaffolder(dg.Scaffolder[JoinflowScaffoldParams]):
    """Writes ``defs.yaml`` with the pipeline source and the database taken from the environment."""

    @classmethod
    def get_scaffold_params(cls) -> type[JoinflowScaffoldParams]:
        return JoinflowScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[JoinflowScaffoldParams]) -> None:
        params = request.params
        attributes: dict = {}
        if params is not None and params.manifest:
            attributes["manifest"] = params.manifest
        else:
            attributes["module"] = (params.module if params is not None and params.module
                                    else "my_project.pipeline")
        attributes["database_url_env"] = DEFAULT_DATABASE_URL_ENV
        dg.scaffold_component(request, attributes)


@dg.scaffold_with(JoinflowPipelineScaffolder)
class JoinflowPipelineComponent(dg.Component, dg.Model, dg.Resolvable):
    """The tables of a joinflow pipeline as Dagster assets, from ``defs.yaml``.

    Give exactly one of ``module`` (importable module name(s): reads the foreign-key graph
    from the database when the code location loads) or ``manifest`` (a manifest file written
    by ``python -m joinflow.pipeline manifest``; relative paths are relative to the folder of
    ``defs.yaml``).  Every run worker imports the pipeline module with the same database
    configuration (``JOINFLOW_DATABASE_URL`` in its environment); the resource refuses a
    step bound to another database than ``database_url`` / ``$database_url_env``.
    """

    module: Optional[Union[str, list[str]]] = Field(
        default=None, description="Importable pipeline module(s), e.g. 'lcms.pipeline'.")
    manifest: Optional[str] = Field(
        default=None, description="Pipeline manifest (JSON), relative to this defs.yaml's folder.")
    database_url: Optional[str] = Field(
        default=None, description="SQLAlchemy URL the runs must use (prefer database_url_env: URLs hold passwords).")
    database_url_env: Optional[str] = Field(
        default=DEFAULT_DATABASE_URL_ENV,
        description="Environment variable holding that URL, read when a run starts (Dagster EnvVar).")
    resource_key: str = Field(default="joinflow", description="Resource key of the JoinflowResource.")
    include_sources: bool = Field(default=True, description="Manual/Lookup tables as external assets.")
    key_prefix: Union[str, list[str]] = Field(default_factory=list, description="Prefix of every asset key.")
    group_name: Optional[str] = Field(default=None, description="One group for all assets (default: the schema).")
    owners: list[str] = Field(default_factory=list, description="Owners of every asset.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags of every asset.")
    partition_attributes: dict[str, str] = Field(
        default_factory=dict, description="Table -> primary-key attribute keying its dynamic partitions.")
    select: Optional[Union[str, list[str]]] = Field(
        default=None, description="joinflow selectors of the tables to materialize (e.g. '+RunQC', 'schema:lab').")
    exclude: Optional[Union[str, list[str]]] = Field(default=None, description="joinflow selectors to leave out.")
    settings: Optional[dict[str, dict]] = Field(
        default=None, description="Per-step settings by selector, e.g. {'tier:computed': {'retries': 2}}.")
    shards: dict[str, int] = Field(
        default_factory=dict, description="Table -> number of shard ops computing its keys in parallel.")
    sensor: bool = Field(default=False, description="Also define the joinflow sensor (new upstream rows -> runs).")
    sensor_name: Optional[str] = Field(default=None, description="Name of that sensor (default joinflow_sensor).")
    minimum_interval_seconds: int = Field(default=30, description="The sensor's minimum interval.")

    def build_pipeline(self, context: dg.ComponentLoadContext) -> Pipeline:
        if (self.module is None) == (self.manifest is None):
            raise ValueError(
                f"JoinflowPipelineComponent at {context.path}: give exactly one of 'module' (an importable "
                f"pipeline module) or 'manifest' (a manifest file) in defs.yaml; got module={self.module!r}, "
                f"manifest={self.manifest!r}.")
        if self.manifest is not None:
            path = Path(self.manifest)
            if not path.is_absolute():
                base = context.path if context.path.is_dir() else context.path.parent
                path = base / path
            return Pipeline.from_manifest(path)
        modules = [self.module] if isinstance(self.module, str) else list(self.module)
        return Pipeline(*modules)

    def get_translator(self) -> DagsterJoinflowTranslator:
        prefix = [self.key_prefix] if isinstance(self.key_prefix, str) else list(self.key_prefix)
        return ComponentTranslator(key_prefix=prefix, group_name=self.group_name, owners=self.owners,
                                   tags=self.tags, partition_attributes=self.partition_attributes,
                                   shards=self.shards)

    def get_resource(self) -> JoinflowResource:
        if self.database_url:
            return JoinflowResource(database_url=self.database_url)
        if self.database_url_env:
            return JoinflowResource(database_url=dg.EnvVar(self.database_url_env))
        return JoinflowResource()

    def selection_kwargs(self) -> dict:
        """select / exclude / settings for build_joinflow_assets (only those given)."""
        given = {k: v for k, v in (("select", self.select), ("exclude", self.exclude), ("settings", self.settings))
                 if v is not None}
        accepted = inspect.signature(build_joinflow_assets).parameters
        missing = [k for k in given if k not in accepted]
        if missing:
            raise ValueError(f"JoinflowPipelineComponent: {', '.join(missing)} need a dagster-joinflow whose "
                             "build_joinflow_assets takes them (joinflow's pipeline selection); remove them from "
                             "defs.yaml or upgrade.")
        return given

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets = build_joinflow_assets(self.build_pipeline(context), self.get_translator(),
                                       resource_key=self.resource_key, include_sources=self.include_sources,
                                       **self.selection_kwargs())
        sensors = []
        if self.sensor:
            kwargs = {"minimum_interval_seconds": self.minimum_interval_seconds}
            if self.sensor_name:
                kwargs["name"] = self.sensor_name
            sensors.append(build_joinflow_sensor(assets, **kwargs))
        return dg.Definitions(assets=assets, sensors=sensors, resources={self.resource_key: self.get_resource()})


__all__ = ["JoinflowPipelineComponent", "JoinflowPipelineScaffolder", "ComponentTranslator"]
