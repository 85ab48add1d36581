"""From table to training set: the clips a query chooses, written as WebDataset shards with their metadata.

    python -m extract.select OUTPUT_DIR --where "SQL" --out DIR [--shard-size N | --shard-bytes B]
                             [--caption HEAD|sample] [--media-ext EXT] [--arrays] [--input-root DIR]

The query is DuckDB SQL over the run's table (`OUTPUT_DIR/clips.parquet`, written by `extract.export`
first when it is not there), e.g. `"probe.duration_s" > 4 and "av_sync.status" = 'ok'` (column names
hold dots: double quotes). Each chosen clip becomes one sample with the same members as every other,
in the layout video2dataset writes: `{key}.mp4` (its media bytes exactly as they were in the input
shard, no re-encode, whatever the container: `--media-ext` names another suffix, and the json keeps
the original member name and format), `{key}.json` (its base fields, every head's fields, `media`,
`caption_source`), `{key}.txt` (empty when there is no caption: by default the input sample's own
caption where it has one, else the first of llava_video, vlm_caption, audio_caption that ran; `--caption HEAD` or `--caption
sample` chooses), and with `--arrays` each head's arrays as `{key}.<head>.<name>.npy`.
Keys stay the clips' keys. Output shards are `000000.tar`, `000001.tar`, ...

Each input shard is read once, in order, streaming; an output shard is written as `NAME.tar.partial`
and renamed when complete, so a kill leaves no truncated shard and the same command finishes the job.
`manifest.json` holds the query, the counts and the shards read and written; a folder that holds
another query's shards is refused. Input shards that moved since the run are found with
`--input-root DIR` (their file names under DIR); a missing one is a one-line error before anything
is written.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

from tqdm import tqdm

from extract.errors import ConfigError, or_exit

SHARD_SIZE = 1000


def chosen_clips(table: Path, where: str) -> dict[str, dict[str, str]]:
    """{input shard: {key: member}} of the clips the query chooses, each shard's clips in its table order."""
    import duckdb

    try:
        rows = duckdb.sql(f"select key, shard, member from read_parquet('{table}') where {where}").fetchall()
    except duckdb.Error as exc:
        said = " ".join(str(exc).split())
        hint = ""
        if "Referenced table" in said or ("not found" in said and "." in where):  # probe.status read as table.column
            hint = ("; the table's column names hold dots and are written in double quotes, strings in single ones, "
                    "as in the SQL \"probe.status\" = 'ok', which a shell takes as --where \"\\\"probe.status\\\" = 'ok'\"")
        raise ConfigError(f"the query does not run: {said}{hint}") from None
    chosen: dict[str, dict[str, str]] = {}
    for key, shard, member in rows:
        chosen.setdefault(shard, {})[key] = member
    return chosen


def locate(shard: str, input_root: Path | None, folders: dict[str, Path]) -> str:
    """Where an input shard is now: its name under `input_root`, else where the run read it or last found it."""
    from extract.export import current_location

    if input_root is not None:
        return str(input_root / Path(shard).name)
    return current_location(shard, folders)


def _older_than_the_records(table: Path, folders: dict[str, Path]) -> bool:
    written = table.stat().st_mtime
    return any(path.stat().st_mtime > written for folder in folders.values()
               for pattern in ("*.tar", "*.tar.partial", "*.stats.json") for path in folder.glob(pattern))


def _missing(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:") and not Path(url).is_file()


def _member_bytes(info: tarfile.TarInfo) -> int:
    """What one member takes in a PAX tar: its header blocks (more for a long or non-ASCII name) and its padded data."""
    return len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")) + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _tar_bytes(members: int) -> int:
    """The size of a closed tar whose members take `members` bytes: two zero blocks end it, and tarfile pads the whole
    to a multiple of its record size."""
    return -(-(members + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class _Shards:
    """Output shards of at most `size` samples or `max_bytes` bytes, each written as `.partial` and renamed when
    full. On a rerun the shards that are already complete are counted, not written again."""

    def __init__(self, folder: Path, size: int, max_bytes: int | None):
        self.folder, self.size, self.max_bytes = folder, size, max_bytes
        self.index, self.count, self.bytes = 0, 0, 0
        self.tar = self.file = None
        self.written: list[dict] = []

    def _path(self) -> Path:
        return self.folder / f"{self.index:06d}.tar"

    def add(self, members: list[tuple[str, bytes]]) -> None:
        infos = []
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            infos.append((info, data))
        size = sum(_member_bytes(info) for info, _ in infos)
        if self.count and (self.count >= self.size or (self.max_bytes and _tar_bytes(self.bytes + size) > self.max_bytes)):
            self.close_shard()
        if self.count == 0 and not self._path().exists():
            self.file = open(self._path().with_name(self._path().name + ".partial"), "wb")
            self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.PAX_FORMAT)
        if self.tar is not None:
            for info, data in infos:
                self.tar.addfile(info, io.BytesIO(data))
        self.count, self.bytes = self.count + 1, self.bytes + size

    def close_shard(self) -> None:
        if not self.count:
            return
        if self.tar is not None:
            self.tar.close()
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.file.name, self._path())
            self.tar = self.file = None
        self.written.append({"shard": self._path().name, "clips": self.count, "bytes": _tar_bytes(self.bytes)})
        self.index, self.count, self.bytes = self.index + 1, 0, 0


def _head_arrays(folder: Path, stem: str, keys: set[str]) -> dict[str, dict[str, bytes]]:
    """{key: {name: .npy bytes}} of one head's output shard, for these keys."""
    found: dict[str, dict[str, bytes]] = {}
    path = next((p for p in (folder / f"{stem}.tar", folder / f"{stem}.tar.partial") if p.exists()), None)
    if path is None:
        return found
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                key, _, suffix = info.name.partition(".")
                if key in keys and suffix.endswith(".npy"):
                    found.setdefault(key, {})[suffix[: -len(".npy")]] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError):
        pass  # a cut .partial: the arrays before the cut
    return found


def _sample_json(records: dict[str, dict], base_fields: tuple[str, ...]) -> dict:
    first = next(iter(records.values()))
    out = {name: first.get(name) for name in base_fields if name not in ("head", "model", "status", "error_type", "error", "arrays")}
    out["heads"] = {head: {name: value for name, value in record.items() if name not in base_fields or name in
                           ("model", "status", "error_type", "error")} for head, record in records.items()}
    return out


SAMPLE_CAPTION = "sample"  # --caption sample: the input WebDataset sample's own .txt
CAPTIONING_HEADS = ("llava_video", "vlm_caption", "audio_caption")  # the default's choice where the input has no caption


def caption_of(records: dict[str, dict], sample: dict | None, caption: str | None, heads: dict) -> tuple[str | None, str | None]:
    """(the caption for {key}.txt, where it came from). `caption` None: the input sample's own caption where it has one
    (a dataset's captions are not replaced unasked), else the first captioning head of the run."""
    own = (sample or {}).get("caption")
    if caption == SAMPLE_CAPTION or (caption is None and own):
        return own, SAMPLE_CAPTION if own is not None else None
    head = caption or next((name for name in CAPTIONING_HEADS if name in heads), None)
    text = (records.get(head) or {}).get("caption") if head else None
    return text, head if text is not None else None


def select(output_dir: Path, where: str, out: Path, shard_size: int = SHARD_SIZE, shard_bytes: int | None = None,
           caption: str | None = None, arrays: bool = False, input_root: Path | None = None, progress: bool = True,
           media_ext: str = "mp4") -> dict:
    from extract.data import ClipItem, ShardPlan, read_members, shard_stem
    from extract.decode import sniff_container
    from extract.export import export, head_folders, shard_records
    from extract.schema import BASE_FIELDS

    output_dir, out = Path(output_dir), Path(out)
    if shard_size < 1 or (shard_bytes is not None and shard_bytes < 1):
        raise ConfigError("--shard-size and --shard-bytes must be at least 1")
    folders = head_folders(output_dir)
    if caption is not None and caption != SAMPLE_CAPTION and caption not in folders:
        raise ConfigError(f"--caption {caption}: that head did not run here (heads: {', '.join(folders)}, or "
                          f"{SAMPLE_CAPTION}: the input sample's own)")
    if not media_ext or not all(c.isalnum() for c in media_ext):
        raise ConfigError(f"--media-ext {media_ext!r}: give a file suffix such as mp4")
    table = output_dir / "clips.parquet"
    if not table.exists() or _older_than_the_records(table, folders):  # a run since the export: its clips count too
        if table.exists() and progress:
            print(f"note: {table} is older than the run's records; exporting it again", file=sys.stderr)
        export(output_dir, table, progress=False)
    chosen = chosen_clips(table, where)
    located = {shard: locate(shard, input_root, folders) for shard in chosen}
    missing = [url for url in located.values() if _missing(url)]
    if missing:
        hint = "" if input_root else "; if the shards moved, give --input-root DIR"
        raise ConfigError(f"input shard {missing[0]} is not there ({len(missing)} missing){hint}")
    query = {"where": where, "run": str(output_dir.resolve()), "caption": caption, "arrays": arrays, "shard_size": shard_size,
             "shard_bytes": shard_bytes, "media_ext": media_ext}
    _claim(out, query)

    shards = _Shards(out, shard_size, shard_bytes)
    written = not_found = 0
    for shard in tqdm(sorted(chosen), desc="input shards", unit="shard", disable=not progress):
        wanted = chosen[shard]
        stem = shard_stem(shard)
        records, _ = shard_records(stem, folders)
        head_arrays = {head: _head_arrays(folder, stem, set(wanted)) for head, folder in folders.items()} if arrays else {}
        plan = ShardPlan({located[shard]: {"select": set()}})
        found = set()
        for item in read_members([{"url": located[shard]}], plan, max_member_bytes=1 << 40):
            if not isinstance(item, ClipItem) or item.key not in wanted or item.data is None:  # repeats come once
                continue
            found.add(item.key)
            by_head = {head: recs[item.key] for head, recs in records.items() if item.key in recs}
            text, source = caption_of(by_head, item.sample, caption, folders)
            # the format from the bytes, as probe's `container` names it: a JPEG saved as .mp4 says jpeg
            about = _sample_json(by_head, BASE_FIELDS) | {"media": {"member": item.member, "format": sniff_container(bytes(item.data[:64]))},
                                                         "caption_source": source}
            # one media suffix for every sample (the bytes are as they were; decoders read the container from them), and
            # a .txt for every sample, empty when there is no caption: a loader's to_tuple("mp4", "txt") reads them all
            members = [(f"{item.key}.{media_ext}", bytes(item.data)),
                       (f"{item.key}.json", json.dumps(about, ensure_ascii=False).encode()),
                       (f"{item.key}.txt", (text or "").encode())]
            for head, per_key in head_arrays.items():
                members += [(f"{item.key}.{head}.{name}.npy", data) for name, data in sorted(per_key.get(item.key, {}).items())]
            shards.add(members)
            written += 1
        not_found += len(set(wanted) - found)
    shards.close_shard()
    manifest = {**query, "status": "complete", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "clips_chosen": sum(len(keys) for keys in chosen.values()), "clips_written": written,
                "clips_not_found": not_found, "input_shards": [located[s] for s in sorted(chosen)], "output_shards": shards.written}
    _write_manifest(out, manifest)
    return manifest


def _claim(out: Path, query: dict) -> None:
    """One folder, one query: refuse a folder holding another query's shards; say which query writes here."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    has_shards = any(out.glob("*.tar")) or any(out.glob("*.tar.partial"))
    if path.exists() and has_shards:
        before = json.loads(path.read_text())
        if {k: before.get(k) for k in query} != query:
            raise ConfigError(f"{out} holds the shards of another query ({before.get('where')!r} over {before.get('run')}); "
                              "give --out another folder")
    elif has_shards:
        raise ConfigError(f"{out} holds shards this tool did not write; give --out another folder")
    _write_manifest(out, {**query, "status": "writing"})


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f"manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.select", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path, help="a run's output_dir (its <head>/ folders, and clips.parquet)")
    parser.add_argument("--where", required=True, help="DuckDB SQL over the table's columns, e.g. \"probe.status\" = 'ok'")
    parser.add_argument("--out", type=Path, required=True, help="the folder for the new shards")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"clips per output shard (default {SHARD_SIZE})")
    size.add_argument("--shard-bytes", type=int, help="bytes per output shard, at most (a clip larger alone gets one)")
    parser.add_argument("--caption", help="what goes to {key}.txt: a head's caption (llava_video, ...) or 'sample', the input "
                        "sample's own .txt (default: the sample's own where it has one, else the first of llava_video, vlm_caption, audio_caption that ran; "
                        "an empty .txt when there is none)")
    parser.add_argument("--media-ext", default="mp4", help="the suffix of every sample's media member, whatever its container "
                        "(default mp4, so to_tuple('mp4', 'txt') reads every sample; the json keeps the original name)")
    parser.add_argument("--arrays", action="store_true", help="also write each head's arrays as {key}.<head>.<name>.npy")
    parser.add_argument("--input-root", type=Path, help="the folder the input shards are in now, when they moved")
    args = parser.parse_args(argv)
    done = or_exit(lambda: select(args.output_dir, args.where, args.out, args.shard_size if args.shard_bytes is None else 1 << 62,
                                  args.shard_bytes, args.caption, args.arrays, args.input_root, media_ext=args.media_ext))
    print(f"wrote {done['clips_written']} of {done['clips_chosen']} chosen clips into {len(done['output_shards'])} shard(s) in "
          f"{args.out}" + (f"; {done['clips_not_found']} not found in their input shards" if done["clips_not_found"] else ""))


if __name__ == "__main__":
    main()
