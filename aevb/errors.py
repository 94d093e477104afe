"""The one exception type that reaches users.

Anything the user can cause (a missing file, a corrupt file, a nonsense option value) raises
:class:`AevbError` with a one-line message; the CLI prints it and exits with status 2.
Everything else is a bug and keeps its traceback.
"""


class AevbError(Exception):
    """A user-facing error: its message is one line that says what is wrong and what to do."""


class TrainingInterrupted(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after saving a checkpoint at ``samples``;
    ``signal`` is the signal's number where one was received; ``runs``, where several named runs
    stopped together (``aevb reproduce``), each one's samples."""

    def __init__(self, samples: int, signal: int | None = None, runs: dict[str, int] | None = None):
        self.samples, self.signal, self.runs = samples, signal, dict(runs or {})
        where = ", ".join(f"{name} at {count:,} samples" for name, count in self.runs.items())
        super().__init__(f"interrupted: {where}" if where else f"interrupted at {samples:,} samples")

    def __reduce__(self):
        # Rebuilt from its fields, not from its message: it crosses processes (aevb reproduce --jobs).
        return type(self), (self.samples, self.signal, self.runs)


class TrainingDiverged(AevbError):
    """Training gave up: the bound stayed non-finite after every rollback allowed. The run
    directory keeps what was written (its checkpoints are of the diverged run)."""
