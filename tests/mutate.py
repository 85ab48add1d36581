"""The project's mutation check: apply planned mutations to a room, run that room's tests, report the survivors.

    .venv/bin/python tests/mutate.py                 # every room
    .venv/bin/python tests/mutate.py writer runner   # some rooms
    .venv/bin/python tests/mutate.py --list          # the rooms, their tests and mutation counts
    .venv/bin/python tests/mutate.py --plan FILE     # another file of planned mutations

Each mutation (tests/mutations.py) is one small change of the kind real bugs are (a sign flipped, `<` for `<=`, a
check removed, a default changed), given as a snippet of the source that must occur exactly once and its
replacement. The check runs in a copy of the working tree (the tree itself is never touched), one mutation at a
time; a mutation survives when the room's tests all pass with it. A snippet that no longer matches is reported as
stale (the code moved on; update the list), never silently skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_plan(path: Path) -> dict[str, dict]:
    spec = importlib.util.spec_from_file_location("mutation_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ROOMS


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (REPO / name).is_file()]


def copy_tree(target: Path) -> None:
    for name in tracked_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[bool, str]:
    """(whether the tests all passed, the last lines of their output)."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=tree,
                              env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timed out (counted as killed)"
    return done.returncode == 0, (done.stdout + done.stderr).strip().splitlines()[-1:][0] if (done.stdout + done.stderr).strip() else ""


def check_room(name: str, room: dict, tree: Path, timeout: float) -> dict:
    survivors, stale, killed = [], [], 0
    passed, line = run_tests(tree, room["tests"], timeout)
    if not passed:
        return {"room": name, "error": f"the room's tests fail without any mutation: {line}"}
    for path, old, new, what in room["mutations"]:
        source = (tree / path).read_text()
        if source.count(old) != 1:
            stale.append(f"{path}: {what} (snippet found {source.count(old)} times)")
            continue
        (tree / path).write_text(source.replace(old, new))
        try:
            passed, line = run_tests(tree, room["tests"], timeout)
        finally:
            (tree / path).write_text(source)
        if passed:
            survivors.append(f"{path}: {what}")
        else:
            killed += 1
        print(f"  {'SURVIVED' if passed else 'killed  '}  {path}: {what}", flush=True)
    return {"room": name, "planned": len(room["mutations"]), "killed": killed, "survivors": survivors, "stale": stale}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rooms", nargs="*", help="rooms to check (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for one run of a room's tests")
    parser.add_argument("--plan", type=Path, default=REPO / "tests" / "mutations.py", help="the file of planned mutations")
    args = parser.parse_args()
    ROOMS = load_plan(args.plan)
    unknown = sorted(set(args.rooms) - set(ROOMS))
    if unknown:
        parser.error(f"unknown room(s) {', '.join(unknown)}; rooms: {', '.join(ROOMS)}")
    rooms = {name: ROOMS[name] for name in (args.rooms or ROOMS)}
    if args.list:
        for name, room in rooms.items():
            print(f"{name:<14} {len(room['mutations']):>3} mutations  tests: {' '.join(room['tests'])}")
        return 0
    reports = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for name, room in rooms.items():
            started = time.monotonic()
            print(f"# {name}: {len(room['mutations'])} mutations, tests {' '.join(room['tests'])}", flush=True)
            reports.append(check_room(name, room, tree, args.timeout) | {"seconds": time.monotonic() - started})
    print(f"\n{'room':<14} {'planned':>7} {'survived':>8} {'rate':>6} {'stale':>5}  seconds")
    failed = False
    for report in reports:
        if "error" in report:
            print(f"{report['room']:<14} {report['error']}")
            failed = True
            continue
        checked = report["planned"] - len(report["stale"])
        rate = len(report["survivors"]) / checked if checked else 0.0
        print(f"{report['room']:<14} {report['planned']:>7} {len(report['survivors']):>8} {rate:>6.0%} {len(report['stale']):>5}  "
              f"{report['seconds']:.0f}")
        for survivor in report["survivors"]:
            print(f"    survived: {survivor}")
        for entry in report["stale"]:
            print(f"    stale: {entry}")
        failed |= bool(report["stale"]) or rate > 0.1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
