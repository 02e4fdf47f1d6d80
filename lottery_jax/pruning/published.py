"""The published Experiment 2 runs, built in, and a results directory held against them.

The paper's official repository (https://github.com/acnagle/optimal-lottery-tickets, Apache-2.0)
kept, at commit 2298c254 (2020-10-11), one record per run of its pruning program: 3,077 runs over
every family (FC2, FC4, LeNet5), variant (redundant linear, redundant ReLU, wide, and the trained
baseline), sparsity of the published grid and budget (1-20, 30, 50, 100, and for some sparsities 125
and 150 epochs), all with seed 1. They ship in this package as
``lottery_jax/paper/published_runs.csv.gz`` (the CSV of their numbers, gzip-compressed; see
``lottery_jax/paper/NOTICE``).

How they relate to the paper's figures: the published figures take, per sparsity, the BEST final
accuracy over several result folders (a max over budgets, not a mean), so a figure point is
:meth:`PublishedRuns.best` over the budgets drawn; some figure points came from runs that are not
in these records. Compare a reproduction run by run (:func:`compare`: same family, variant,
sparsity and budget), and with the figure as "best of the budgets"
(:func:`lottery_jax.plotting.plot_results` with ``aggregate="best"``).

Parameter counts are the published code's: for the pruned LeNet5 nets ``remaining_params``
includes the 2,550 frozen conv weights, which this project does not count (its FC counts agree
exactly); a comparison row carries both counts.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from lottery_jax.data import dataset_identity
from lottery_jax.errors import UserError

#: Where the records come from.
SOURCE = "https://github.com/acnagle/optimal-lottery-tickets"
SOURCE_COMMIT = "2298c254"
LICENSE = "Apache-2.0"
#: The shipped file (package data of :mod:`lottery_jax.paper`) and the sha256 of its CSV text.
PUBLISHED_FILE = "published_runs.csv.gz"
PUBLISHED_SHA256 = "4ee004747627ee1cc6b80a0f1edaaa3f81b8a29426aa87b0cb9541d0a9364d56"
PUBLISHED_COUNT = 3077

COLUMNS = (
    "family", "variant", "redundancy", "sparsity", "epochs", "seed", "lr", "total_params",
    "remaining_params", "final_test_acc", "train_minutes", "test_acc_per_epoch",
)  # fmt: skip
FAMILIES = ("fc2", "fc4", "lenet5")
#: Variant names as ``sweep --variants`` spells them, and the trained baseline.
VARIANTS = ("red-linear", "red-relu", "wide", "baseline")


def sparsity_key(sparsity: float) -> float:
    """Sparsities compare after rounding to 6 decimals (0.975 read from JSON or CSV alike)."""
    return round(float(sparsity), 6)


@dataclass(frozen=True)
class PublishedRun:
    """One run of the published pruning program, as its own record has it."""

    family: str
    variant: str
    redundancy: int | None  # (None for the baselines)
    sparsity: float  # fraction of weights removed (0 for the baselines)
    epochs: int  # the run's budget (the cosine's T)
    seed: int
    lr: float
    total_params: int
    remaining_params: int
    final_test_acc: float  # percent, MNIST test set, after the last epoch
    train_minutes: float  # on the published GPU, training and testing
    test_acc_per_epoch: tuple[float, ...]

    @property
    def key(self) -> tuple[str, str, float, int]:
        return self.family, self.variant, sparsity_key(self.sparsity), self.epochs

    def to_json(self) -> dict:
        return {
            "family": self.family, "variant": self.variant, "redundancy": self.redundancy,
            "sparsity": self.sparsity, "epochs": self.epochs, "seed": self.seed, "lr": self.lr,
            "total_params": self.total_params, "remaining_params": self.remaining_params,
            "final_test_acc": self.final_test_acc, "train_minutes": self.train_minutes,
            "test_acc_per_epoch": list(self.test_acc_per_epoch),
        }  # fmt: skip


@dataclass(frozen=True)
class PublishedRuns:
    """The published records, looked up by (family, variant, sparsity, epochs)."""

    runs: tuple[PublishedRun, ...]
    source: str = f"{SOURCE} at commit {SOURCE_COMMIT} ({LICENSE})"
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict = {}
        for run in self.runs:
            if run.key in index:
                f, v, s, e = run.key
                raise UserError(f"{self.source}: two records for {f} {v} s={s:g}, {e} epochs")
            index[run.key] = run
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self):
        return iter(self.runs)

    def get(self, family: str, variant: str, sparsity: float, epochs: int) -> PublishedRun | None:
        """The record of one run, or None where the published code has none."""
        if variant == "baseline":
            sparsity = 0.0
        return self._index.get((family, variant, sparsity_key(sparsity), int(epochs)))

    def find(self, family: str, variant: str, sparsity: float, epochs: int) -> PublishedRun:
        """:meth:`get`, but a one-line :class:`UserError` where there is no such record."""
        _check_names(family, variant)
        run = self.get(family, variant, sparsity, epochs)
        if run is None:
            raise UserError(
                f"no published run for {family} {variant} at sparsity {sparsity:g} with "
                f"{epochs} epochs (budgets there: {_join(self.budgets(family, variant, sparsity))})"
            )
        return run

    def select(
        self, family: str | None = None, variant: str | None = None, epochs: int | None = None
    ) -> tuple[PublishedRun, ...]:
        """The records of a family / variant / budget (any of them None: all)."""
        return tuple(
            r for r in self.runs
            if (family is None or r.family == family) and (variant is None or r.variant == variant)
            and (epochs is None or r.epochs == int(epochs))
        )  # fmt: skip

    def budgets(self, family: str, variant: str, sparsity: float = 0.0) -> tuple[int, ...]:
        """The epoch budgets recorded for (family, variant, sparsity), ascending."""
        s = 0.0 if variant == "baseline" else sparsity_key(sparsity)
        return tuple(sorted(e for (f, v, sk, e) in self._index
                            if (f, v, sk) == (family, variant, s)))  # fmt: skip

    def best(self, family: str, variant: str, sparsity: float, budgets=None) -> PublishedRun | None:
        """The record with the best final accuracy over ``budgets`` (default: every budget), as
        the published figures take it; None if there is none among them."""
        if budgets is None:
            budgets = self.budgets(family, variant, sparsity)
        found = [self.get(family, variant, sparsity, e) for e in budgets]
        found = [r for r in found if r is not None]
        return max(found, key=lambda r: (r.final_test_acc, -r.epochs)) if found else None


def _join(values) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _check_names(family: str, variant: str) -> None:
    if family not in FAMILIES:
        raise UserError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)})")
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")


# ----------------------------------------------------------------------------- reading


def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{what} is not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{what} is not finite: {text!r}")
    return value


def _parse_row(row: dict[str, str]) -> PublishedRun:
    """One CSV row -> a record, checked; raises ValueError naming the bad field."""
    family, variant = row["family"], row["variant"]
    if family not in FAMILIES or variant not in VARIANTS:
        raise ValueError(f"unknown family/variant {family!r}/{variant!r}")
    red = row["redundancy"]
    per_epoch = tuple(
        _number(a, float, "test_acc_per_epoch") for a in row["test_acc_per_epoch"].split()
    )
    run = PublishedRun(
        family=family, variant=variant,
        redundancy=None if red == "" else _number(red, int, "redundancy"),
        sparsity=_number(row["sparsity"], float, "sparsity"),
        epochs=_number(row["epochs"], int, "epochs"), seed=_number(row["seed"], int, "seed"),
        lr=_number(row["lr"], float, "lr"),
        total_params=_number(row["total_params"], int, "total_params"),
        remaining_params=_number(row["remaining_params"], int, "remaining_params"),
        final_test_acc=_number(row["final_test_acc"], float, "final_test_acc"),
        train_minutes=_number(row["train_minutes"], float, "train_minutes"),
        test_acc_per_epoch=per_epoch,
    )  # fmt: skip
    if not 0.0 <= run.sparsity < 1.0 or run.epochs < 1:
        raise ValueError(f"sparsity {run.sparsity} or epochs {run.epochs} out of range")
    if not 0 <= run.remaining_params <= run.total_params:
        raise ValueError(f"remaining_params {run.remaining_params} > total {run.total_params}")
    if not all(0.0 <= a <= 100.0 for a in (run.final_test_acc, *per_epoch)):
        raise ValueError("an accuracy is outside [0, 100]")
    if len(per_epoch) != run.epochs or per_epoch[-1] != run.final_test_acc:
        raise ValueError(
            f"test_acc_per_epoch has {len(per_epoch)} values for {run.epochs} epochs or does not "
            "end at final_test_acc"
        )
    return run


def parse_published(text: str, source: str = "published runs") -> PublishedRuns:
    """Records from CSV text with the published columns; a one-line :class:`UserError` naming
    ``source`` and the line for anything malformed."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise UserError(f"{source}: expected the columns {','.join(COLUMNS)}")
    runs = []
    for row in reader:
        if None in row or None in row.values():
            raise UserError(f"{source} line {reader.line_num}: expected {len(COLUMNS)} fields")
        try:
            runs.append(_parse_row(row))
        except ValueError as e:
            raise UserError(f"{source} line {reader.line_num}: {e}") from None
    if not runs:
        raise UserError(f"{source}: no records")
    return PublishedRuns(tuple(runs), source=source)


def read_published_text(path: str | os.PathLike) -> str:
    """The CSV text of a published-runs file (``.csv`` or ``.csv.gz``), as one-line errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read published runs {path}: {e.strerror or e}") from None
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (EOFError, OSError, UnicodeDecodeError, ValueError) as e:  # (BadGzipFile: OSError)
        raise UserError(f"published runs {path} is not a (gzipped) UTF-8 CSV file: {e}") from None


def shipped_path() -> Path:
    """The built-in records' file inside the installed package."""
    path = Path(str(files("lottery_jax.paper") / PUBLISHED_FILE))
    if not path.is_file():  # pragma: no cover - a broken install
        raise UserError(f"the published runs are missing from the installation ({path})")
    return path


@functools.cache
def _shipped() -> PublishedRuns:
    text = read_published_text(shipped_path())
    if hashlib.sha256(text.encode()).hexdigest() != PUBLISHED_SHA256:
        raise UserError(f"the built-in published runs {shipped_path()} are damaged (sha256)")
    runs = parse_published(text, source=f"{SOURCE} at commit {SOURCE_COMMIT} ({LICENSE})")
    if len(runs) != PUBLISHED_COUNT:  # pragma: no cover - guarded by the sha256
        raise UserError(f"the built-in published runs hold {len(runs)} records, not 3,077")
    return runs


def load_published(path: str | os.PathLike | None = None) -> PublishedRuns:
    """The published runs: the built-in 3,077 records (``path`` None, checked against their
    sha256 and read once per process) or a file with the same columns."""
    if path is None:
        return _shipped()
    return parse_published(read_published_text(path), source=str(path))


# ----------------------------------------------------------------------------- comparison

#: The settings of the published runs (REFERENCE: the published pruning scripts); a run that
#: differs in one of them is still compared, and the row names the difference.
PUBLISHED_SETTINGS = {"batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4,
                      "inputs": "normalized"}  # fmt: skip
PUBLISHED_LR = {"fc2": 0.1, "fc4": 0.1, "lenet5": 0.01}
PUBLISHED_REDUNDANCY = 5
#: Data a run may have been trained on to be held against the records: MNIST, or an IDX folder
#: recorded by a path other than the data folder named here, which is not opened to check (the
#: runs this repository commits were trained on the verified MNIST;
#: :func:`lottery_jax.data.dataset_identity`).
PUBLISHED_DATA = ("mnist", "unchecked")
#: How the published LeNet5 variants got their frozen conv layers (the paper's trained LeNet5).
PUBLISHED_CONV = "paper-lenet5"
#: ``|ours - published|`` above this many points counts as a point that differs.
THRESHOLD = 5.0


@dataclass(frozen=True)
class OurRun:
    """One of our finished runs (a ``results.json``), as the comparison reads it."""

    family: str
    variant: str
    sparsity: float
    epochs: int
    seed: int | None
    remaining_params: int
    final_test_acc: float
    settings: str  # "" when run with the published settings, else e.g. "lr=0.05"
    path: str

    @property
    def key(self) -> tuple[str, str, float, int, str]:
        return self.family, self.variant, sparsity_key(self.sparsity), self.epochs, self.settings


@dataclass(frozen=True)
class ComparisonRow:
    """Our runs of one (family, variant, sparsity, epochs) against the published record."""

    family: str
    variant: str
    sparsity: float
    epochs: int
    settings: str
    seeds: tuple[int | None, ...]
    accs: tuple[float, ...]  # our final accuracies, in the order of ``seeds``
    remaining_params: int  # as this project counts them
    published: PublishedRun | None

    @property
    def count(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float:
        return sum(self.accs) / len(self.accs)

    @property
    def std(self) -> float:
        """Population standard deviation over seeds (0 for one seed), as the figure draws it."""
        m = self.mean
        return (sum((a - m) ** 2 for a in self.accs) / len(self.accs)) ** 0.5

    @property
    def published_acc(self) -> float | None:
        return None if self.published is None else self.published.final_test_acc

    @property
    def diff(self) -> float | None:
        """Our mean minus the published accuracy (points); None without a record."""
        return None if self.published is None else self.mean - self.published.final_test_acc

    def to_json(self) -> dict:
        p = self.published
        return {
            "family": self.family, "variant": self.variant, "sparsity": self.sparsity,
            "epochs": self.epochs, "settings": self.settings or "published",
            "seeds": list(self.seeds), "final_test_accs": list(self.accs), "count": self.count,
            "mean": self.mean, "std": self.std, "remaining_params": self.remaining_params,
            "published_final_test_acc": self.published_acc,
            "published_remaining_params": None if p is None else p.remaining_params,
            "published_seed": None if p is None else p.seed, "diff": self.diff,
        }  # fmt: skip


@dataclass(frozen=True)
class VariantSummary:
    """How one (family, variant, epochs) agrees with the published records."""

    family: str
    variant: str
    epochs: int
    points: int  # our (sparsity) points
    matched: int  # of them with a published record
    mean_abs_diff: float | None
    mean_diff: float | None
    worst: ComparisonRow | None  # the point with the largest |diff|
    over_threshold: int  # points with |diff| > threshold
    threshold: float

    def to_json(self) -> dict:
        w = self.worst
        return {
            "family": self.family, "variant": self.variant, "epochs": self.epochs,
            "points": self.points, "matched": self.matched, "mean_abs_diff": self.mean_abs_diff,
            "mean_diff": self.mean_diff, "over_threshold": self.over_threshold,
            "threshold": self.threshold,
            "worst": None if w is None else {"sparsity": w.sparsity, "mean": w.mean,
                                             "published": w.published_acc, "diff": w.diff},
        }  # fmt: skip


ROW_COLUMNS = (
    "family", "variant", "sparsity", "epochs", "settings", "count", "mean", "std",
    "remaining_params", "published_final_test_acc", "published_remaining_params", "diff", "seeds",
)  # fmt: skip
RUN_COLUMNS = (
    "family", "variant", "sparsity", "epochs", "seed", "remaining_params", "final_test_acc",
    "published_final_test_acc", "published_remaining_params", "diff", "settings",
)  # fmt: skip


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) >= 1 or v == 0 else f"{v:g}"
    return str(v)


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([[_cell(v) for v in r] for r in rows])
    return buf.getvalue()


@dataclass(frozen=True)
class Comparison:
    """A results directory against the published records: one row per (family, variant,
    sparsity, epochs, settings), every run, and a summary per (family, variant, epochs)."""

    runs_dir: str
    rows: tuple[ComparisonRow, ...]
    runs: tuple[OurRun, ...]
    duplicates: int  # runs left out: the same configuration and seed found again
    source: str

    def summarize(
        self, threshold: float = THRESHOLD, min_sparsity: float = 0.0, max_sparsity: float = 1.0
    ) -> tuple[VariantSummary, ...]:
        """One summary per (family, variant, epochs) over the rows with min <= s <= max."""
        groups: dict = {}
        for r in self.rows:
            if min_sparsity <= r.sparsity <= max_sparsity:
                groups.setdefault((r.family, r.variant, r.epochs), []).append(r)
        out = []
        for (family, variant, epochs), rows in sorted(groups.items(), key=_summary_order):
            matched = [r for r in rows if r.diff is not None]
            diffs = [r.diff for r in matched]
            out.append(VariantSummary(
                family=family, variant=variant, epochs=epochs, points=len(rows),
                matched=len(matched),
                mean_abs_diff=sum(abs(d) for d in diffs) / len(diffs) if diffs else None,
                mean_diff=sum(diffs) / len(diffs) if diffs else None,
                worst=max(matched, key=lambda r: abs(r.diff)) if matched else None,
                over_threshold=sum(abs(d) > threshold for d in diffs), threshold=threshold,
            ))  # fmt: skip
        return tuple(out)

    @property
    def summary(self) -> tuple[VariantSummary, ...]:
        return self.summarize()

    def run_rows(self) -> list[tuple]:
        """The long-form table (one row per run) as tuples in :data:`RUN_COLUMNS` order."""
        by_key = {(r.family, r.variant, sparsity_key(r.sparsity), r.epochs, r.settings): r
                  for r in self.rows}  # fmt: skip
        out = []
        for run in self.runs:
            p = by_key[run.key].published
            acc = None if p is None else p.final_test_acc
            out.append((run.family, run.variant, run.sparsity, run.epochs, run.seed,
                        run.remaining_params, run.final_test_acc, acc,
                        None if p is None else p.remaining_params,
                        None if acc is None else run.final_test_acc - acc,
                        run.settings or "published"))  # fmt: skip
        return out

    def csv_text(self) -> str:
        """One row per (family, variant, sparsity, epochs): :data:`ROW_COLUMNS`."""
        rows = []
        for r in self.rows:
            j = r.to_json()
            rows.append([*(j[c] for c in ROW_COLUMNS[:-1]),
                         " ".join("" if s is None else str(s) for s in r.seeds)])  # fmt: skip
        return _csv(ROW_COLUMNS, rows)

    def runs_csv_text(self) -> str:
        """One row per run: :data:`RUN_COLUMNS`."""
        return _csv(RUN_COLUMNS, self.run_rows())

    def to_json(self, threshold: float = THRESHOLD) -> dict:
        """A ``results.json``-style record of the whole comparison."""
        return {
            "command": "compare",
            "runs_dir": self.runs_dir,
            "published": {
                "source": self.source,
                "records": PUBLISHED_COUNT,
                "sha256": PUBLISHED_SHA256,
            },  # fmt: skip
            "threshold": threshold,
            "runs": len(self.runs),
            "duplicates": self.duplicates,
            "points": len(self.rows),
            "matched": sum(r.published is not None for r in self.rows),
            "summary": [s.to_json() for s in self.summarize(threshold)],
            "rows": [r.to_json() for r in self.rows],
            "run_rows": [dict(zip(RUN_COLUMNS, r, strict=True)) for r in self.run_rows()],
        }

    def write(self, path: str | os.PathLike) -> tuple[Path, Path, Path]:
        """Write ``path`` (the rows, CSV), the JSON beside it (same stem, ``.json``) and the
        long-form table (``<stem>-runs.csv``), each atomically; returns the three paths."""
        from lottery_jax.rundir import ensure_dir, write_atomic, write_json

        path = Path(path)
        ensure_dir(path.parent)
        if path.suffix.lower() != ".csv":
            raise UserError(f"the comparison is written as CSV: give a .csv file, not {path}")
        json_path = path.with_suffix(".json")
        runs_path = path.with_name(f"{path.stem}-runs.csv")
        write_atomic(path, self.csv_text().encode())
        write_atomic(runs_path, self.runs_csv_text().encode())
        write_json(json_path, self.to_json())
        return path, json_path, runs_path

    def write_runs_csv(self, path: str | os.PathLike) -> Path:
        """Only the long-form table (one row per run) to ``path``, atomically."""
        from lottery_jax.rundir import ensure_dir, write_atomic

        ensure_dir(Path(path).parent)
        return write_atomic(Path(path), self.runs_csv_text().encode())


def _summary_order(item) -> tuple:
    (family, variant, epochs), _ = item
    return FAMILIES.index(family), epochs, VARIANTS.index(variant)


def _data_name(cfg: dict) -> str | None:
    """The data a run recorded, as a Dataset name: prune runs record the name (``data``), the
    ``train`` command a folder (``data_dir``, an IDX folder) or a dataset (``dataset``)."""
    if cfg.get("data") is not None:
        return str(cfg["data"])
    if cfg.get("data_dir"):
        return f"idx:{cfg['data_dir']}"
    if cfg.get("dataset"):
        return f"tfds:{cfg['dataset']}"
    return None


def run_settings(result: dict, family: str, variant: str) -> str:
    """How a run's settings differ from the published ones ("" when they do not)."""
    cfg = result.get("config", {})
    diffs = []
    want = {**PUBLISHED_SETTINGS, "lr": PUBLISHED_LR[family]}
    if variant != "baseline":
        want["redundancy"] = PUBLISHED_REDUNDANCY
        if family == "lenet5":
            want["conv_from"] = PUBLISHED_CONV
    data = _data_name(cfg)
    if data is not None and dataset_identity(data) not in PUBLISHED_DATA:
        diffs.append(f"data={data}")
    for key, value in want.items():
        got = cfg.get(key, value if key == "inputs" else None)
        if got != value and not (isinstance(value, float) and isinstance(got, int | float)
                                 and abs(got - value) <= 1e-12 * abs(value)):  # fmt: skip
            diffs.append(f"{key}={got}")
    return " ".join(diffs)


def our_runs(results: list[dict]) -> tuple[list[OurRun], int]:
    """Our runs of the figure (:func:`lottery_jax.plotting.classify`) and how many duplicates
    (same configuration and seed, found again below the directory) were left out."""
    from lottery_jax.plotting import classify, point_params, variant_of

    runs, seen, dups = [], set(), 0
    for r in sorted(results, key=lambda r: r.get("_path", "")):
        c = classify(r)
        params = point_params(r)
        if c is None or params is None:
            continue
        family, curve, epochs = c
        variant = variant_of(curve)
        sparsity = 0.0 if variant == "baseline" else float(
            r.get("sparsity", r.get("config", {}).get("sparsity", 0.0)))  # fmt: skip
        run = OurRun(family=family, variant=variant, sparsity=sparsity, epochs=int(epochs),
                     seed=r.get("seed"), remaining_params=int(params),
                     final_test_acc=float(r["final_test_accuracy"]),
                     settings=run_settings(r, family, variant),
                     path=str(r.get("_path", "")))  # fmt: skip
        if (run.key, run.seed) in seen:
            dups += 1
            continue
        seen.add((run.key, run.seed))
        runs.append(run)
    return runs, dups


def compare(
    runs_dir: str | os.PathLike,
    published: PublishedRuns | None = None,
    *,
    families: list[str] | None = None,
    epochs: list[int] | None = None,
) -> Comparison:
    """Hold every Experiment 2 run below ``runs_dir`` (``sweep``/``prune`` results and their
    baselines) against the published records (default: the built-in ones), keeping only the
    given families and epoch budgets when those are given."""
    from lottery_jax.pruning.sweep import collect_results

    runs_dir = Path(runs_dir)
    runs, dups = our_runs(collect_results(runs_dir))
    runs = [r for r in runs if (not families or r.family in families)
            and (not epochs or r.epochs in {int(e) for e in epochs})]  # fmt: skip
    if not runs:
        raise UserError(f"no pruning or baseline results below {runs_dir} to compare")
    published = published or load_published()
    groups: dict = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    rows = []
    for key in sorted(groups, key=lambda k: (FAMILIES.index(k[0]), k[3], VARIANTS.index(k[1]),
                                             k[2], k[4])):  # fmt: skip
        family, variant, s, epochs, settings = key
        members = sorted(groups[key], key=lambda r: (r.seed is None, r.seed or 0))
        # (another network, or other data than MNIST: no record to hold it against)
        comparable = "redundancy=" not in settings and "data=" not in settings
        rows.append(ComparisonRow(
            family=family, variant=variant, sparsity=members[0].sparsity, epochs=epochs,
            settings=settings, seeds=tuple(m.seed for m in members),
            accs=tuple(m.final_test_acc for m in members),
            remaining_params=members[0].remaining_params,
            published=published.get(family, variant, s, epochs) if comparable else None,
        ))  # fmt: skip
    return Comparison(runs_dir=str(runs_dir), rows=tuple(rows), runs=tuple(runs),
                      duplicates=dups, source=published.source)  # fmt: skip
