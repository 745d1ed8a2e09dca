"""An LC-MS-like pipeline: samples are injected, the instrument records scans, the scans are
centroided, peaks are detected, and each run gets a summary.

Importing this module declares its tables in the schema ``lcms`` on the current
connection (``dj.conn()``: with no configuration, the SQLite file ``joinflow.db`` in the
working directory; ``JOINFLOW_DATABASE_URL`` points it elsewhere).  The dependency graph,
parents first (``.Name`` is a part table, filled together with its master)::

    Instrument ──(nullable, renamed to ms)─┐
    Sample ────────────────────────────────┴─> Run ─┬─> Acquisition ─> Centroid ─> DetectedPeaks ─┐
    Standard ─> Run.Spike (spiked standards)        │   .Scan            .Spectrum    .Peak         │
                                                    └───────────────────────────────> PeakSummary <─┘

The data are simulated: ``Acquisition.make`` first writes the run's raw file the way an
instrument would export it (deterministic, from the run's key, its instrument and its spiked
standards), then reads it.  The files go to ``$LCMS_RAW_DIR/<schema>/`` (default folder:
``joinflow-lcms-raw`` in the system's temporary folder; workers on several machines need a
shared one).
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

import joinflow as dj

schema = dj.Schema("lcms")

PROTON = 1.007276  # mass of a proton: [M+H]+ and [M-H]- ions
SCANS_PER_RUN = 40  # every 4th scan is an MS2 scan of the previous survey scan's base peak


@schema
class Instrument(dj.Lookup):
    definition = """
    # mass spectrometers of the facility
    instrument_id : varchar(16)
    ---
    vendor : varchar(32)
    model : varchar(64)
    resolution : int32          # resolving power at m/z 200
    """
    contents = [
        ("orbi1", "Thermo", "Q Exactive HF", 120000),
        ("qtof1", "Agilent", "6546 Q-TOF", 60000),
    ]


@schema
class Standard(dj.Lookup):
    definition = """
    # reference compounds spiked into runs as internal standards
    standard : varchar(32)
    ---
    formula : varchar(32)
    mass : float64              # neutral monoisotopic mass, Da
    rt_expected : float32       # expected retention time, seconds
    """
    contents = [
        ("caffeine", "C8H10N4O2", 194.080376, 240.0),
        ("sulfadimethoxine", "C12H14N4O4S", 310.073576, 620.0),
        ("leu-enkephalin", "C28H37N5O7", 555.269298, 1010.0),
        ("reserpine", "C33H40N2O9", 608.273381, 1390.0),
    ]


@schema
class Sample(dj.Manual):
    definition = """
    # a biological sample as received
    sample_id : varchar(16)
    ---
    organism : enum('human', 'mouse', 'yeast')
    matrix = 'plasma' : varchar(32)
    collected = null : date
    """


@schema
class Run(dj.Manual):
    definition = """
    # one injection of a sample (an LC-MS session)
    -> Sample
    run_idx : int16
    ---
    -> [nullable] Instrument.proj(ms='instrument_id')
    acquired : datetime
    polarity : enum('positive', 'negative')
    gradient_min = 30 : float32   # LC gradient length, minutes
    notes = '' : varchar(255)
    """

    class Spike(dj.Part):
        definition = """
        # internal standards added to the sample before this injection
        -> master
        -> Standard
        ---
        amount_pmol : float32
        """


# -- the simulated instrument ---------------------------------------------------------------------
def raw_dir() -> Path:
    """Where the instrument "exports" its raw files: $LCMS_RAW_DIR or a temporary folder."""
    folder = Path(os.environ.get("LCMS_RAW_DIR") or Path(tempfile.gettempdir()) / "joinflow-lcms-raw")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def expected_rt(rt_expected: float, window_s: float) -> float:
    """Retention time of a standard in a run whose gradient spans `window_s` seconds
    (``Standard.rt_expected`` is given for the default 30-minute gradient)."""
    return 60.0 + rt_expected * window_s / 1800.0


def _profile(rng, mz, height, resolution):
    """Profile-mode points of one ion: a Gaussian peak, 9 points across +-3 sigma."""
    sigma = mz / resolution / 2.355
    offsets = np.linspace(-3, 3, 9) * sigma
    return mz + offsets, height * np.exp(-0.5 * (offsets / sigma) ** 2) * rng.uniform(0.95, 1.05, 9)


def write_raw_file(key: dict) -> Path:
    """Simulate the run's raw file (deterministic: seeded by the run's key) and return its path.

    Compounds of the sample plus the spiked standards elute as Gaussian chromatographic
    peaks; survey (MS1) scans record their ions in profile mode with chemical noise and a
    small calibration error; every 4th scan fragments the previous survey's base peak (MS2).
    """
    run = (Run & key).fetch1()
    resolution = 30000
    if run["ms"] is not None:
        resolution = int((Instrument & {"instrument_id": run["ms"]}).fetch1("resolution"))
    sign = 1.0 if run["polarity"] == "positive" else -1.0
    rng = np.random.default_rng(zlib.crc32(f"{run['sample_id']}/{run['run_idx']}".encode()))

    window = float(run["gradient_min"]) * 60.0
    times = np.linspace(60.0, 60.0 + window, SCANS_PER_RUN)
    width = 1.2 * (times[1] - times[0])  # chromatographic sigma, seconds
    n = int(rng.integers(10, 16))
    compounds = [(float(m), float(t), float(h)) for m, t, h in
                 zip(rng.uniform(120, 900, n), rng.uniform(times[2], times[-3], n), rng.lognormal(13, 0.8, n))]
    spikes = (Run.Spike * Standard & key).to_dicts()
    compounds += [(s["mass"] + sign * PROTON, expected_rt(s["rt_expected"], window), 2.0e5 * s["amount_pmol"])
                  for s in spikes]
    calibration_ppm = rng.normal(1.5, 0.3)

    scans, offsets, all_mz, all_intensity = [], [0], [], []
    last_base = None
    for i, rt in enumerate(times):
        if i % 4 == 3 and last_base is not None:  # MS2 of the last survey's base peak
            level, precursor = 2, last_base
            frags = rng.uniform(50, precursor - 18, int(rng.integers(4, 9)))
            pieces = [_profile(rng, f, rng.lognormal(10, 0.7), resolution) for f in frags]
        else:
            level, precursor = 1, np.nan
            pieces = []
            for mz, apex_rt, height in compounds:
                h = height * np.exp(-0.5 * ((rt - apex_rt) / width) ** 2)
                if h > 500:
                    measured = mz * (1 + rng.normal(calibration_ppm, 0.4) * 1e-6)
                    pieces.append(_profile(rng, measured, h, resolution))
        noise = 60
        pieces.append((rng.uniform(100, 1000, noise), rng.exponential(300.0, noise)))
        mz = np.concatenate([p[0] for p in pieces])
        intensity = np.concatenate([p[1] for p in pieces])
        order = np.argsort(mz)
        mz, intensity = mz[order], intensity[order]
        if level == 1:
            last_base = float(mz[np.argmax(intensity)])
        scans.append((i + 1, rt, level, precursor))
        all_mz.append(mz)
        all_intensity.append(intensity)
        offsets.append(offsets[-1] + len(mz))

    path = raw_dir() / schema.database / f"{run['sample_id']}_{run['run_idx']}.npz"
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
    header = np.array(scans, dtype=[("scan", "i4"), ("rt", "f8"), ("ms_level", "i1"), ("precursor_mz", "f8")])
    np.savez_compressed(partial, header=header, offsets=np.array(offsets),
                        mz=np.concatenate(all_mz), intensity=np.concatenate(all_intensity))
    os.replace(partial, path)  # whole files only, even with several workers
    return path


def centroid(mz: np.ndarray, intensity: np.ndarray, gap: float = 0.05, min_points: int = 3):
    """Profile -> centroid: one peak per run of points closer than `gap`, at its weighted mean m/z."""
    if len(mz) == 0:
        return mz, intensity
    cuts = np.flatnonzero(np.diff(mz) > gap) + 1
    out_mz, out_intensity = [], []
    for seg_mz, seg_int in zip(np.split(mz, cuts), np.split(intensity, cuts)):
        if len(seg_mz) >= min_points:
            out_mz.append(float(np.average(seg_mz, weights=seg_int)))
            out_intensity.append(float(seg_int.max()))
    return np.array(out_mz), np.array(out_intensity)


# -- the pipeline's automated steps ---------------------------------------------------------------
@schema
class Acquisition(dj.Imported):
    definition = """
    # the raw data of a run, read from the instrument's file
    -> Run
    ---
    raw_file : varchar(255)     # the file the scans were read from
    n_scans : int32
    duration_s : float32        # retention time covered, seconds
    """

    class Scan(dj.Part):
        definition = """
        # one scan of the run, in profile mode
        -> master
        scan : int32
        ---
        rt : float64                # retention time, seconds
        ms_level : int8
        precursor_mz = null : float64   # MS2 scans: the fragmented ion
        tic : float64               # total ion current
        base_peak_mz : float64
        mz : <blob>                 # profile m/z values
        intensity : <blob>          # intensities at those m/z values
        """

    def make(self, key):
        path = write_raw_file(key)  # a real pipeline would find the instrument's export here
        with np.load(path) as raw:
            header, offsets, mz, intensity = raw["header"], raw["offsets"], raw["mz"], raw["intensity"]
        scans = []
        for i, (scan, rt, level, precursor) in enumerate(header.tolist()):
            s_mz, s_int = mz[offsets[i]:offsets[i + 1]], intensity[offsets[i]:offsets[i + 1]]
            scans.append(dict(key, scan=scan, rt=rt, ms_level=level,
                              precursor_mz=None if np.isnan(precursor) else precursor,
                              tic=float(s_int.sum()), base_peak_mz=float(s_mz[np.argmax(s_int)]),
                              mz=s_mz, intensity=s_int))
        self.insert1(dict(key, raw_file=str(path), n_scans=len(scans),
                          duration_s=float(header["rt"][-1] - header["rt"][0])))
        self.Scan.insert(scans)


@schema
class Centroid(dj.Computed):
    definition = """
    # centroided spectra of a run
    -> Acquisition
    ---
    n_centroids : int32         # over all scans
    """

    class Spectrum(dj.Part):
        definition = """
        # the centroided spectrum of one scan
        -> master
        -> Acquisition.Scan
        ---
        n_centroids : int32
        mz : <blob>
        intensity : <blob>
        """

    def make(self, key):
        spectra = []
        for scan in (Acquisition.Scan & key).to_dicts(order_by="scan"):
            mz, intensity = centroid(scan["mz"], scan["intensity"])
            spectra.append(dict(key, scan=scan["scan"], n_centroids=len(mz), mz=mz, intensity=intensity))
        self.insert1(dict(key, n_centroids=sum(s["n_centroids"] for s in spectra)))
        self.Spectrum.insert(spectra)


@schema
class DetectedPeaks(dj.Computed):
    definition = """
    # chromatographic peaks found in a run's survey (MS1) spectra
    -> Centroid
    ---
    n_peaks : int32
    ppm_tolerance : float32     # m/z tolerance used to follow an ion across scans
    """

    class Peak(dj.Part):
        definition = """
        # one detected peak
        -> master
        peak_idx : int32
        ---
        mz : float64                # intensity-weighted m/z
        rt : float64                # retention time at the apex, seconds
        intensity : float64         # apex intensity
        area : float64              # integrated over retention time
        n_scans : int16
        """

    ppm = 20.0
    min_scans = 3
    min_intensity = 5000.0

    def make(self, key):
        ms1 = (Centroid.Spectrum * Acquisition.Scan.proj("rt", "ms_level") & key & "ms_level = 1")
        rts, mzs, ints = ms1.to_arrays("rt", "mz", "intensity", order_by="scan")
        rt = np.concatenate([np.full(len(m), t) for t, m in zip(rts, mzs)]) if len(rts) else np.array([])
        mz = np.concatenate(list(mzs)) if len(mzs) else np.array([])
        intensity = np.concatenate(list(ints)) if len(ints) else np.array([])
        order = np.argsort(mz)
        rt, mz, intensity = rt[order], mz[order], intensity[order]
        max_gap = 2.5 * float(np.median(np.diff(rts))) if len(rts) > 1 else 0.0
        peaks = []
        for group in np.split(np.arange(len(mz)), np.flatnonzero(np.diff(mz) / mz[1:] * 1e6 > self.ppm) + 1):
            if len(group) < self.min_scans:
                continue
            group = group[np.argsort(rt[group])]
            for trace in np.split(group, np.flatnonzero(np.diff(rt[group]) > max_gap) + 1):
                apex = trace[np.argmax(intensity[trace])]
                if len(trace) < self.min_scans or intensity[apex] < self.min_intensity:
                    continue
                peaks.append(dict(key, peak_idx=len(peaks), mz=float(np.average(mz[trace], weights=intensity[trace])),
                                  rt=float(rt[apex]), intensity=float(intensity[apex]),
                                  area=float(np.trapezoid(intensity[trace], rt[trace])), n_scans=len(trace)))
        self.insert1(dict(key, n_peaks=len(peaks), ppm_tolerance=self.ppm))
        self.Peak.insert(peaks)


@schema
class PeakSummary(dj.Computed):
    definition = """
    # per-run summary of the spectra and the detected peaks: the run's report
    -> Run
    -> DetectedPeaks
    ---
    n_spectra : int32
    max_tic : float64
    base_peak_mz : float64      # base peak of the most intense scan
    n_peaks : int32
    standards_found : int16     # spiked standards detected within 10 ppm and 2 minutes
    mass_error_ppm = null : float32   # median m/z error of the standards found
    """

    def make(self, key):
        scans = (Acquisition.Scan & key).to_dicts(order_by="tic DESC")
        sign = 1.0 if (Run & key).fetch1("polarity") == "positive" else -1.0
        window = float((Acquisition & key).fetch1("duration_s"))  # as recorded, even if Run changed since
        peak_mz, peak_rt = (DetectedPeaks.Peak & key).to_arrays("mz", "rt")
        errors = []
        for std in (Run.Spike * Standard & key).to_dicts():
            ion = std["mass"] + sign * PROTON
            ppm = (peak_mz - ion) / ion * 1e6
            rt = expected_rt(std["rt_expected"], window)
            hits = np.flatnonzero((np.abs(ppm) <= 10) & (np.abs(peak_rt - rt) <= 120))
            if len(hits):
                errors.append(float(ppm[hits[np.argmin(np.abs(ppm[hits]))]]))
        self.insert1(dict(key, n_spectra=len(scans), max_tic=scans[0]["tic"] if scans else 0.0,
                          base_peak_mz=scans[0]["base_peak_mz"] if scans else 0.0, n_peaks=len(peak_mz),
                          standards_found=len(errors), mass_error_ppm=float(np.median(errors)) if errors else None))
