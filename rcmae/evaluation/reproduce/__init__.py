"""`rcmae reproduce`: the paper's Tables 3 and 4 (and figures) from the DCASE 2020 data on a GPU machine."""

from rcmae.evaluation.reproduce.fetch import (
    ARCHIVES,
    ZENODO,
    Archive,
    ChecksumError,
    OfflineError,
    ReproduceError,
    archive_url,
    check_layout,
    check_online,
    download,
    fetch_dcase2020,
    md5_file,
    pretrain_view,
    unpack,
)
from rcmae.evaluation.reproduce.paper import (
    ARMS,
    MACHINE_TYPES,
    PAPER_ORDER,
    PAPER_TABLE3,
    PAPER_TABLE4,
)
from rcmae.evaluation.reproduce.plan import (
    Options,
    dry_run,
    estimate,
    measure_audioldm,
    measure_step_times,
    plan,
    pretrain_view_path,
)
from rcmae.evaluation.reproduce.report import (
    write_report,
)
from rcmae.evaluation.reproduce.steps import (
    run_all,
)

__all__ = [
    "MACHINE_TYPES",
    "ARMS",
    "PAPER_ORDER",
    "PAPER_TABLE3",
    "PAPER_TABLE4",
    "ZENODO",
    "Archive",
    "ARCHIVES",
    "ReproduceError",
    "OfflineError",
    "ChecksumError",
    "archive_url",
    "md5_file",
    "check_online",
    "download",
    "unpack",
    "fetch_dcase2020",
    "check_layout",
    "pretrain_view",
    "Options",
    "plan",
    "pretrain_view_path",
    "measure_step_times",
    "measure_audioldm",
    "estimate",
    "dry_run",
    "run_all",
    "write_report",
]
