"""An LC-MS-like pipeline: instruments, samples, runs with their spectra, a computed summary.

Importing this module declares its tables in the schema ``lcms`` on the current
connection (``dj.conn()``: with no configuration, the SQLite file ``joinflow.db`` in the
working directory).  The dependency graph, parents first::

    Instrument ──(nullable, renamed to ms)──┐
    Sample ─────────────────────────────────┴─> Run ─> Run.Spectrum
                                                 └───> PeakSummary (computed)
"""

import joinflow as dj

schema = dj.Schema("lcms")


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
    # one injection of a sample
    -> Sample
    run_idx : int16
    ---
    -> [nullable] Instrument.proj(ms='instrument_id')
    acquired : datetime
    polarity : enum('positive', 'negative')
    gradient_min = 30 : float32   # LC gradient length, minutes
    notes = '' : varchar(255)
    """

    class Spectrum(dj.Part):
        definition = """
        # one scan of the run
        -> master
        scan : int32
        ---
        rt : float64                # retention time, seconds
        ms_level : int8
        base_peak_mz : float64
        tic : float64               # total ion current
        """


@schema
class PeakSummary(dj.Computed):
    definition = """
    # per-run summary of the spectra (a computed step)
    -> Run
    ---
    n_spectra : int32
    max_tic : float64
    base_peak_mz : float64      # base peak of the most intense scan
    """

    def make(self, key):
        rows = (Run.Spectrum & key).to_dicts(order_by="tic DESC")
        self.insert1(dict(key, n_spectra=len(rows), max_tic=rows[0]["tic"] if rows else 0.0,
                          base_peak_mz=rows[0]["base_peak_mz"] if rows else 0.0))
