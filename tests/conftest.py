import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Tests deliver Ctrl-C (SIGINT) to themselves and to the processes they start, as a terminal does.
# A test run started in the background by a script inherits SIGINT ignored (the shell's rule for
# background jobs), which aevb respects and every child would inherit: the tests run as from a
# terminal instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(os.environ.get("AEVB_TEST_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip cleanly when it is absent."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


import torch  # noqa: E402

# The tests are many small operations: one thread avoids OpenMP contention on small, shared machines.
torch.set_num_threads(int(os.environ.get("AEVB_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run of the small model of tests/test_robustness.py (SMALL), one per test module."""
    from test_cli import call
    from test_robustness import SMALL

    run = tmp_path_factory.mktemp("finished") / "finished"
    assert call(["train", *SMALL, "--max-samples", "2000", "--out", run]) == 0
    return run


@pytest.fixture(scope="module")
def one_thread():
    """One thread for a module whose in-process CLI calls may set another (``--threads``), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
