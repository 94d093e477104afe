"""Run the scripts in examples/ and keep what each prints, for the documentation site's example pages.

    python scripts/example_outputs.py [NAME ...]      # default: every examples/*.py

Each example runs in a fresh temporary directory with its default work directory (so the paths it
prints are the ones a user sees), and its output goes to docs/examples/output/NAME.txt, which the
page docs/examples/*.md includes beside the script's code. A failing example is reported and
leaves its previous output in place.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
OUTPUT_DIR = REPOSITORY / "docs" / "examples" / "output"


def main(names: list[str]) -> int:
    scripts = [REPOSITORY / "examples" / f"{name.removesuffix('.py')}.py" for name in names] or sorted(
        (REPOSITORY / "examples").glob("*.py")
    )
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    failures = 0
    for script in scripts:
        with tempfile.TemporaryDirectory() as work:
            result = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True)
        if result.returncode != 0:
            failures += 1
            print(f"{script.name} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        (OUTPUT_DIR / f"{script.stem}.txt").write_text(result.stdout)
        print(f"{script.name}: {len(result.stdout.splitlines())} lines -> {OUTPUT_DIR / script.stem}.txt")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
