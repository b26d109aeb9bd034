"""A catalog of trained models: which model, trained on what, reusing whose layers.

The catalog is a database (SQLAlchemy Core): by default one SQLite file in the user's
data folder (``$XDG_DATA_HOME/graftnet/catalog.sqlite``, WAL mode), or any database
SQLAlchemy reaches by URL, so that a team can share one (``postgresql://host/models``)::

    >>> import graftnet as gn
    >>> catalog = gn.catalog.Catalog()                        # or Catalog("sqlite:///team.sqlite")
    >>> entry = catalog.add("models/fashion-a", tags=["fashion", "mlp"])
    >>> catalog.search(input_shape=(1, 28, 28), classes=["Sandal"])
    >>> model = catalog.load("fashion-a")                     # latest version; checked first
    >>> print(catalog.lineage_text("fashion-b-ft"))

Each entry holds the model's name and version, its folder, the SHA-256 of its weights
(``cache.weights_fingerprint``), an architecture summary, input shape, task, classes, the
data it was trained on (name + fingerprint), metrics, the recipe, tags and its lineage
links (base -> grafted -> fine-tuned), read from the ``lineage`` that ``graft`` writes in
``spec.json`` and the ``finetuned_from`` that ``graftnet finetune`` writes in
``metadata.json``. Registering a name again with other weights adds a version; with the
same weights and folder it returns the existing entry.

**Checked before use.** ``load`` (and ``rank``) refuse an entry whose folder no longer
exists or whose weights changed since it was registered (``Entry.problem()`` says which;
the size and modification time of the weights file are compared first, and the weights
are hashed again only when they differ). ``relocate`` points an entry at a moved folder
after checking its weights.

**Concurrency.** Every write is one transaction. On SQLite it starts with
``BEGIN IMMEDIATE`` (the write lock is taken first, so two writers never deadlock),
waits for a busy lock up to ``timeout`` seconds (SQLite's busy timeout) and retries with
backoff after that; versions are unique per name (a constraint), so two processes
registering one name at the same time get versions 1 and 2. A lock that outlasts the
timeout is a :class:`CatalogError` saying so, never a bare "database is locked".

**Bad files.** A file that is not SQLite, a damaged database, one that is not a graftnet
catalog or one from a newer schema is refused with a :class:`CatalogError` and left
exactly as it is.

Why SQLAlchemy and not MLflow's Model Registry: the registry stores versions and free-form
tags behind a tracking server; graftnet needs typed queries (input shape, classes, task,
lineage joins), transactions with unique constraints for concurrent registration, and a
default that is one local file with no server. One schema through SQLAlchemy gives all of
that on SQLite and on a shared PostgreSQL/MySQL server alike, for a 3 MB pure-Python
dependency instead of MLflow's server stack.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from graftnet.errors import GraftnetError, did_you_mean

__all__ = ["Catalog", "CatalogError", "Entry", "Link", "LineageNode", "SCHEMA_VERSION", "default_url"]

SCHEMA_VERSION = 1
_SQLITE_HEADER = b"SQLite format 3\x00"
_T = TypeVar("_T")


class CatalogError(GraftnetError, ValueError):
    """A catalog that cannot be opened or used as asked, or an entry that cannot be used."""


# ===================================================================== where
def _data_home() -> Path:
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"])
    return Path.home() / ".local" / "share"


def default_url() -> str:
    """``$GRAFTNET_CATALOG`` (a URL or a file path), else ``sqlite:///<data folder>/graftnet/catalog.sqlite``."""
    given = os.environ.get("GRAFTNET_CATALOG")
    if given:
        return _as_url(given)
    return _as_url(str(_data_home() / "graftnet" / "catalog.sqlite"))


def _as_url(text: str | os.PathLike) -> str:
    """A SQLAlchemy URL: URLs as given, file paths as ``sqlite:///ABSOLUTE``."""
    text = str(text)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


# ===================================================================== entries
@dataclass
class Link:
    """A lineage link: this entry was ``relation`` ("grafted" or "fine-tuned") from a parent."""

    relation: str
    parent_name: str | None
    parent_path: str | None
    parent_fingerprint: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "parent_name": self.parent_name, "parent_path": self.parent_path,
                "parent_fingerprint": self.parent_fingerprint, "details": self.details}


@dataclass
class Entry:
    """One catalogued model version. ``ref`` (``name:vN``) names it in every command."""

    id: int
    name: str
    version: int
    path: str
    fingerprint: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    task: str | None
    classes: list[str] | None
    data_name: str | None
    data_fingerprint: str | None
    architecture: dict[str, Any]
    metrics: dict[str, Any]
    recipe: dict[str, Any] | None
    description: str | None
    tags: list[str]
    links: list[Link]
    created: str | None
    registered: str
    weights_size: int | None
    weights_mtime_ns: int | None

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def problem(self) -> str | None:
        """Why this entry cannot be used as registered (folder gone, weights changed), or None."""
        folder = Path(self.path)
        weights = folder / "weights.safetensors"
        if not (folder / "spec.json").is_file() or not weights.is_file():
            what = "no longer exists" if not folder.exists() else "no longer holds a saved model"
            return (f"its folder {self.path} {what} (moved or deleted); if it moved: graftnet catalog relocate "
                    f"{self.ref} NEW_FOLDER; if it is gone: graftnet catalog remove {self.ref}")
        stat = weights.stat()
        if stat.st_size == self.weights_size and stat.st_mtime_ns == self.weights_mtime_ns:
            return None
        try:
            now = _fingerprint_of(folder)
        except GraftnetError as err:
            return f"its folder {self.path} cannot be read as a model any more ({err})"
        if now != self.fingerprint:
            return (f"its weights in {self.path} changed since it was registered (fingerprint {self.fingerprint[:12]} "
                    f"then, {now[:12]} now); register the new weights with graftnet catalog add {self.path} "
                    f"--name {self.name}")
        return None

    def status(self) -> str:
        """``"ok"``, ``"missing"`` (folder moved or deleted) or ``"changed"`` (other weights)."""
        problem = self.problem()
        if problem is None:
            return "ok"
        return "changed" if "changed" in problem or "cannot be read" in problem else "missing"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "ref": self.ref, "path": self.path,
                "fingerprint": self.fingerprint, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "task": self.task, "classes": self.classes,
                "data": {"name": self.data_name, "fingerprint": self.data_fingerprint},
                "architecture": self.architecture, "metrics": self.metrics, "recipe": self.recipe,
                "description": self.description, "tags": self.tags, "lineage": [k.to_dict() for k in self.links],
                "created": self.created, "registered": self.registered}


@dataclass
class LineageNode:
    """A node of a lineage tree: a catalogued entry, or an ancestor known only from a spec."""

    label: str
    entry: Entry | None
    relation: str | None  # how this node came from its parent ("grafted", "fine-tuned"), None at the root
    detail: str = ""
    children: list[LineageNode] = field(default_factory=list)
    focus: bool = False


# ===================================================================== fingerprints and summaries
def _fingerprint_of(folder: Path) -> str:
    from graftnet.cache import weights_fingerprint
    from graftnet.io.checkpoint import load_model

    return weights_fingerprint(load_model(folder))


def _architecture(model: Any) -> dict[str, Any]:
    rows = model.summary_rows()
    return {"name": model.name, "params": model.count_params(),
            "layers": [{"name": r["name"], "type": r["type"], "output_shape": list(r["output_shape"]),
                        "params": r["params"]} for r in rows],
            "text": " > ".join(f"{r['name']} {r['type']} {tuple(r['output_shape'])}" for r in rows)}


def _task_of(model: Any) -> str | None:
    task = model.info.get("task")
    if task:
        return str(task)
    classes = model.info.get("classes")
    if not classes:
        return None
    return "binary" if tuple(model.output_shape) == (1,) and len(classes) == 2 else "multiclass"


def data_fingerprint(data: Any) -> str:
    """SHA-256 of a Dataset's task, classes and split contents (``Split.fingerprint``)."""
    parts = [data.task, json.dumps(data.classes)] + [s.fingerprint() if s is not None else "-"
                                                    for s in (data.train, data.valid, data.test)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _described_data(info: dict[str, Any]) -> tuple[str | None, str | None]:
    """(name, fingerprint) of the training data from a model's metadata, when no Dataset is at hand.

    The fingerprint is then ``spec:<sha256>`` of how the data was made (loader, scaling,
    transforms, without the folder it was read from): two models trained on data made the
    same way share it."""
    data = info.get("data")
    name = info.get("data_name")
    if isinstance(data, dict):
        name = name or data.get("spec") or data.get("loader")
        described = {k: v for k, v in data.items() if k != "root"}
        return name, "spec:" + hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    if isinstance(data, str):
        return name or data, "spec:" + hashlib.sha256(data.encode()).hexdigest()
    return name, None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj: Any) -> Any:
    from graftnet.io.checkpoint import json_default

    return json.loads(json.dumps(obj, default=json_default)) if obj is not None else None


def _parse_ref(ref: str) -> tuple[str, int | None]:
    """``"fashion-a"`` -> (name, None: the latest); ``"fashion-a:v2"`` or ``"fashion-a:2"`` -> (name, 2)."""
    name, sep, version = str(ref).rpartition(":")
    if sep and (version.isdigit() or (version[:1] in "vV" and version[1:].isdigit())):
        return name, int(version.lstrip("vV"))
    return str(ref), None


# ===================================================================== the database
def _tables() -> Any:
    import sqlalchemy as sa

    meta = sa.MetaData()
    sa.Table("graftnet_meta", meta, sa.Column("key", sa.String(64), primary_key=True),
             sa.Column("value", sa.Text, nullable=False))
    sa.Table(
        "models", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, index=True),
        sa.Column("input_shape", sa.String(128), nullable=False, index=True),
        sa.Column("output_shape", sa.String(128), nullable=False),
        sa.Column("task", sa.String(32)),
        sa.Column("classes", sa.Text),
        sa.Column("data_name", sa.Text),
        sa.Column("data_fingerprint", sa.String(80)),
        sa.Column("architecture", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("recipe", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("created", sa.String(40)),
        sa.Column("registered", sa.String(40), nullable=False),
        sa.Column("weights_size", sa.BigInteger),
        sa.Column("weights_mtime_ns", sa.BigInteger),
        sa.UniqueConstraint("name", "version", name="uq_models_name_version"),
    )
    sa.Table("tags", meta,
             sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
             sa.Column("tag", sa.String(255), primary_key=True))
    sa.Table("links", meta,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("child_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False,
                       index=True),
             sa.Column("relation", sa.String(32), nullable=False),
             sa.Column("parent_name", sa.Text),
             sa.Column("parent_path", sa.Text),
             sa.Column("parent_fingerprint", sa.String(64), index=True),
             sa.Column("details", sa.Text, nullable=False))
    return meta


_LOCKED = ("database is locked", "database table is locked", "deadlock", "lock wait timeout",
           "could not serialize", "busy")
_CORRUPT = ("file is not a database", "malformed", "not a database", "disk image", "disk i/o error")


def _is_locked(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return any(word in text for word in _LOCKED)


def _is_corrupt(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return any(word in text for word in _CORRUPT)


class Catalog:
    """A model catalog at a SQLAlchemy ``url`` (default :func:`default_url`).

    Args:
        url: ``sqlite:///path/catalog.sqlite``, a plain file path (SQLite), or any SQLAlchemy
            URL of a server database (its driver installed), e.g. ``postgresql://host/db``.
        timeout: seconds a write waits for another writer's lock before giving up with a
            :class:`CatalogError` (SQLite's busy timeout, then retries with backoff).

        >>> catalog = Catalog(tmp_path / "catalog.sqlite")
        >>> catalog.add("models/fashion-a").ref
        'fashion-a:v1'
    """

    def __init__(self, url: str | os.PathLike | None = None, *, timeout: float = 60.0) -> None:
        import sqlalchemy as sa

        self.url = _as_url(url) if url is not None else default_url()
        self.timeout = float(timeout)
        self._meta = _tables()
        self._t = self._meta.tables
        try:
            parsed = sa.engine.make_url(self.url)
        except (sa.exc.ArgumentError, ValueError) as err:
            raise CatalogError(f"catalog URL {self.url!r} is not a SQLAlchemy URL ({err}); use a file path, "
                               f"sqlite:///PATH or e.g. postgresql://HOST/DB") from None
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self.file = Path(parsed.database).resolve() if self._sqlite and parsed.database not in (None, "", ":memory:") \
            else None
        if self.file is not None:
            self._check_file(self.file)
        try:
            self.engine = sa.create_engine(parsed, **({"connect_args": {"timeout": self.timeout}}
                                                      if self._sqlite else {"pool_pre_ping": True}))
        except (ImportError, sa.exc.NoSuchModuleError) as err:
            raise CatalogError(f"cannot open catalog {self.url}: {err}; install the database driver "
                               f"(e.g. pip install psycopg2-binary for postgresql://)") from None
        if self._sqlite:
            self._sqlite_events()
        self._open()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------- opening
    def _check_file(self, path: Path) -> None:
        if path.is_dir():
            raise CatalogError(f"catalog {path} is a folder; give the path of a catalog file (e.g. {path}/catalog.sqlite)")
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                header = f.read(16)
            if header != _SQLITE_HEADER:
                raise CatalogError(f"catalog {path} is not an SQLite database (its first bytes are {header[:16]!r}); "
                                   f"the file is corrupt or something else. It was left untouched: move it away "
                                   f"or open another catalog (--catalog / $GRAFTNET_CATALOG)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CatalogError(f"cannot create the catalog folder {path.parent}: {err.strerror or err}") from None

    def _sqlite_events(self) -> None:
        from sqlalchemy import event

        busy_ms = int(self.timeout * 1000)

        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # WAL with synchronous=NORMAL never corrupts the file; a power cut may lose the last commits only
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            # writers take the lock first: a deferred transaction that upgrades to a write fails at once under
            # contention in WAL mode instead of waiting
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("graftnet_write")
                                 else "BEGIN")

    def _set_wal(self) -> None:
        raw = self.engine.raw_connection()  # outside any transaction: SQLite changes the journal mode only there
        try:
            cursor = raw.cursor()
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.close()
        finally:
            raw.close()

    def _open(self) -> None:
        if self._sqlite and self.file is not None:
            self._retry(self._set_wal, "switch the catalog to WAL mode")
        version = self._retry(self._schema_version, "read the catalog's schema version")
        if version is None:
            self._write(self._create, "create the catalog")
            version = self._retry(self._schema_version, "read the catalog's schema version")
        if version != SCHEMA_VERSION:
            raise CatalogError(f"catalog {self._where()} has schema version {version}, written by a newer graftnet; "
                               f"this graftnet ({_graftnet_version()}) reads version {SCHEMA_VERSION}. Upgrade graftnet "
                               f"to use it; the catalog was left untouched")

    def _where(self) -> str:
        return str(self.file) if self.file is not None else self.url

    def _schema_version(self) -> int | None:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if "graftnet_meta" not in names:
                foreign = sorted(names - set(self._t))
                if foreign:
                    raise CatalogError(f"{self._where()} is a database but not a graftnet catalog (it has tables "
                                       f"{', '.join(foreign[:8])}); it was left untouched: open another catalog")
                return None
            value = conn.execute(sa.select(self._t["graftnet_meta"].c.value)
                                 .where(self._t["graftnet_meta"].c.key == "schema_version")).scalar()
        try:
            return int(value) if value is not None else None
        except ValueError:
            raise CatalogError(f"catalog {self._where()} has an unreadable schema version {value!r}; it was left "
                               f"untouched") from None

    def _create(self, conn: Any) -> None:
        import sqlalchemy as sa

        self._meta.create_all(conn, checkfirst=True)
        meta = self._t["graftnet_meta"]
        present = conn.execute(sa.select(meta.c.key)).scalars().all()
        if "schema_version" not in present:
            conn.execute(meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                                         {"key": "created", "value": _now()},
                                         {"key": "created_by", "value": f"graftnet {_graftnet_version()}"}])

    # -------------------------------------------------------------- transactions
    def _retry(self, fn: Callable[[], _T], what: str) -> _T:
        import sqlite3

        import sqlalchemy as sa

        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except (sa.exc.DBAPIError, sqlite3.DatabaseError) as err:  # sqlite3's own from raw connections
                if _is_corrupt(err):
                    raise CatalogError(f"catalog {self._where()} is damaged ({_brief(err)}); it was left as it is: "
                                       f"restore it from a copy, or move it away to start a new one") from None
                # a version taken by a concurrent writer (server databases, where no lock serialises us) is retried
                retry = _is_locked(err) or (isinstance(err, sa.exc.IntegrityError)
                                            and ("uq_models_name_version" in str(err) or "models.version" in str(err)))
                if not retry:
                    raise CatalogError(f"cannot {what} in {self._where()}: {_brief(err)}") from None
                if time.monotonic() > deadline:
                    raise CatalogError(f"cannot {what}: catalog {self._where()} stayed busy (locked by another "
                                       f"writer) for more than {self.timeout:.0f} s; nothing was written. Try again, "
                                       f"or open it with a longer timeout") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)

    def _write(self, fn: Callable[[Any], _T], what: str) -> _T:
        def attempt() -> _T:
            with self.engine.connect().execution_options(graftnet_write=True) as conn, conn.begin():
                return fn(conn)

        return self._retry(attempt, what)

    def _read(self, fn: Callable[[Any], _T], what: str = "read the catalog") -> _T:
        def attempt() -> _T:
            with self.engine.connect() as conn:
                return fn(conn)

        return self._retry(attempt, what)

    # -------------------------------------------------------------- adding
    def add(self, path: str | os.PathLike, *, name: str | None = None, tags: Iterable[str] = (),
            description: str | None = None, data: Any = None, metrics: dict[str, Any] | None = None,
            parent: str | None = None) -> Entry:
        """Register the saved model at ``path`` (a model folder or a run folder).

        Args:
            name: the catalog name (default: the model's name in its spec).
            tags: free words to search by.
            data: the Dataset it was trained on, for a content fingerprint of the data
                (without it the fingerprint describes how the data was made; see ``Entry``).
            metrics: merged over the metrics in its ``metadata.json``.
            parent: the ref or folder of the model it was fine-tuned from (the CLI's
                ``finetune`` records this itself).

        A name already registered with the same weights at the same folder returns that
        entry; other weights (or another folder) become the next version.
        """
        from graftnet.cache import weights_fingerprint
        from graftnet.errors import CheckpointError
        from graftnet.io.checkpoint import load_model

        folder = Path(path).expanduser()
        if not (folder / "spec.json").exists() and (folder / "model" / "spec.json").exists():
            folder = folder / "model"  # a run folder
        if not folder.exists():
            raise CatalogError(f"cannot register {folder}: no such folder")
        try:
            model = load_model(folder)
        except CheckpointError as err:
            raise CatalogError(f"cannot register {folder}: {err}") from None
        folder = Path(model.info["path"]).resolve()
        info = model.info
        name = str(name or model.name)
        if not name.strip() or ":" in name:
            raise CatalogError(f"catalog name {name!r}: use a non-empty name without ':' (':vN' names a version)")
        weights = folder / "weights.safetensors"
        stat = weights.stat()
        data_name, data_fp = _described_data(info)
        if data is not None:
            data_name, data_fp = data.name, data_fingerprint(data)
        elif info.get("data_fingerprint"):
            data_fp = str(info["data_fingerprint"])
        recipe = info.get("recipe") or info.get("plan") or info.get("graft")
        row = {
            "name": name, "path": str(folder), "fingerprint": weights_fingerprint(model),
            "input_shape": json.dumps(list(model.input_shape)), "output_shape": json.dumps(list(model.output_shape)),
            "task": _task_of(model), "classes": json.dumps(info.get("classes")) if info.get("classes") else None,
            "data_name": data_name, "data_fingerprint": data_fp,
            "architecture": json.dumps(_architecture(model)),
            "metrics": json.dumps(_jsonable({**(info.get("metrics") or {}), **(metrics or {})})),
            "recipe": json.dumps(_jsonable(recipe)) if recipe is not None else None,
            "description": description, "created": info.get("created"), "registered": _now(),
            "weights_size": stat.st_size, "weights_mtime_ns": stat.st_mtime_ns,
        }
        links = self._links_of(model, info, parent)
        tag_list = sorted({str(t).strip() for t in tags if str(t).strip()})
        entry_id = self._write(lambda conn: self._insert(conn, row, links, tag_list), f"register {name}")
        return self._get_by_id(entry_id)

    def _links_of(self, model: Any, info: dict[str, Any], parent: str | None) -> list[dict[str, Any]]:
        source = parent or info.get("finetuned_from")
        if source:
            target = self._parent_target(str(source))
            return [{"relation": "fine-tuned", **target, "details": json.dumps(
                {"plan": _jsonable(info.get("plan"))} if info.get("plan") else {})}]
        lineage = model.lineage
        if lineage and (lineage.get("base") or lineage.get("base_fingerprint")):
            details = {"reused": list((lineage.get("reused") or {}).keys()), "new": list(lineage.get("new") or []),
                       "shared": bool(lineage.get("shared")), "base_lineage": _jsonable(lineage.get("base_lineage"))}
            return [{"relation": "grafted", "parent_name": lineage.get("base"),
                     "parent_path": str(Path(lineage["base_path"]).resolve()) if lineage.get("base_path") else None,
                     "parent_fingerprint": lineage.get("base_fingerprint"), "details": json.dumps(details)}]
        return []

    def _parent_target(self, source: str) -> dict[str, Any]:
        """Name, folder and weights fingerprint of a fine-tuned model's parent (a ref or a folder)."""
        path = Path(source).expanduser()
        if (path / "spec.json").is_file():
            resolved = path.resolve()
            known = self._read(lambda conn: self._rows(conn, path=str(resolved)))
            fingerprint = known[-1].fingerprint if known else _fingerprint_of(resolved)
            name = known[-1].name if known else json.loads((resolved / "spec.json").read_text()).get("name")
            return {"parent_name": name, "parent_path": str(resolved), "parent_fingerprint": fingerprint}
        entry = self.get(source)
        return {"parent_name": entry.name, "parent_path": entry.path, "parent_fingerprint": entry.fingerprint}

    def _insert(self, conn: Any, row: dict[str, Any], links: list[dict[str, Any]], tags: list[str]) -> int:
        import sqlalchemy as sa

        models = self._t["models"]
        same = conn.execute(sa.select(models.c.id).where(models.c.name == row["name"],
                                                         models.c.fingerprint == row["fingerprint"],
                                                         models.c.path == row["path"])).scalar()
        if same is not None:  # registered before: add any new tags, keep the entry
            have = set(conn.execute(sa.select(self._t["tags"].c.tag).where(self._t["tags"].c.model_id == same))
                       .scalars())
            new = [t for t in tags if t not in have]
            if new:
                conn.execute(self._t["tags"].insert(), [{"model_id": same, "tag": t} for t in new])
            return int(same)
        latest = conn.execute(sa.select(sa.func.max(models.c.version)).where(models.c.name == row["name"])).scalar()
        entry_id = conn.execute(models.insert().values(**row, version=(latest or 0) + 1)).inserted_primary_key[0]
        if tags:
            conn.execute(self._t["tags"].insert(), [{"model_id": entry_id, "tag": t} for t in tags])
        if links:
            conn.execute(self._t["links"].insert(), [{**link, "child_id": entry_id} for link in links])
        return int(entry_id)

    # -------------------------------------------------------------- reading
    def _rows(self, conn: Any, *, where: Any = None, path: str | None = None) -> list[Entry]:
        import sqlalchemy as sa

        models, tags, links = self._t["models"], self._t["tags"], self._t["links"]
        query = sa.select(models).order_by(models.c.name, models.c.version)
        if where is not None:
            query = query.where(where)
        if path is not None:
            query = query.where(models.c.path == path)
        rows = conn.execute(query).mappings().all()
        ids = [r["id"] for r in rows]
        tag_map: dict[int, list[str]] = {i: [] for i in ids}
        link_map: dict[int, list[Link]] = {i: [] for i in ids}
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            for t in conn.execute(sa.select(tags).where(tags.c.model_id.in_(chunk)).order_by(tags.c.tag)).mappings():
                tag_map[t["model_id"]].append(t["tag"])
            for k in conn.execute(sa.select(links).where(links.c.child_id.in_(chunk)).order_by(links.c.id)).mappings():
                link_map[k["child_id"]].append(Link(k["relation"], k["parent_name"], k["parent_path"],
                                                    k["parent_fingerprint"], json.loads(k["details"] or "{}")))
        return [_entry(r, tag_map[r["id"]], link_map[r["id"]]) for r in rows]

    def _get_by_id(self, entry_id: int) -> Entry:
        rows = self._read(lambda conn: self._rows(conn, where=self._t["models"].c.id == entry_id))
        return rows[0]

    def list(self, name: str | None = None) -> list[Entry]:
        """Every entry (every version), by name then version; ``name`` keeps that name's versions."""
        where = self._t["models"].c.name == name if name is not None else None
        return self._read(lambda conn: self._rows(conn, where=where))

    def get(self, ref: str) -> Entry:
        """The entry ``ref`` names: ``NAME`` (its latest version) or ``NAME:vN``."""
        name, version = _parse_ref(ref)
        versions = self.list(name)
        if not versions:
            names = sorted({e.name for e in self.list()})
            raise CatalogError(f"no model {name!r} in the catalog {self._where()}; it holds "
                               f"{', '.join(names[:20]) if names else 'no models'}." + did_you_mean(name, names))
        if version is None:
            return versions[-1]
        for entry in versions:
            if entry.version == version:
                return entry
        raise CatalogError(f"{name!r} has no version {version} in the catalog; it has "
                           f"{', '.join(f'v{e.version}' for e in versions)}")

    def search(self, *, input_shape: Sequence[int] | None = None, classes: Sequence[str] | None = None,
               task: str | None = None, tag: str | None = None, text: str | None = None) -> list[Entry]:
        """Entries that match every criterion given.

        ``input_shape`` exactly; ``classes``: the model knows every class named (case-
        insensitive); ``task``: binary, multiclass or regression; ``tag`` exactly; ``text``:
        a substring of the name, description, data name, architecture or a tag.
        """
        import sqlalchemy as sa

        models, tags = self._t["models"], self._t["tags"]
        clauses = []
        if input_shape is not None:
            clauses.append(models.c.input_shape == json.dumps([int(v) for v in input_shape]))
        if task is not None:
            clauses.append(models.c.task == task)
        if tag is not None:
            clauses.append(models.c.id.in_(sa.select(tags.c.model_id).where(tags.c.tag == tag)))
        if text:
            pattern = f"%{text.lower()}%"
            clauses.append(sa.or_(sa.func.lower(models.c.name).like(pattern),
                                  sa.func.lower(models.c.description).like(pattern),
                                  sa.func.lower(models.c.data_name).like(pattern),
                                  sa.func.lower(models.c.architecture).like(pattern),
                                  models.c.id.in_(sa.select(tags.c.model_id)
                                                  .where(sa.func.lower(tags.c.tag).like(pattern)))))
        where = sa.and_(*clauses) if clauses else None
        found = self._read(lambda conn: self._rows(conn, where=where))
        if classes:
            wanted = {str(c).lower() for c in classes}
            found = [e for e in found if wanted <= {c.lower() for c in (e.classes or [])}]
        return found

    def load(self, ref: str, *, device: Any = None) -> Any:
        """The model ``ref`` names, after checking its folder and weights are as registered."""
        from graftnet.io.checkpoint import load_model

        entry = self.get(ref)
        problem = entry.problem()
        if problem:
            raise CatalogError(f"catalogued model {entry.ref} cannot be used: {problem}")
        return load_model(entry.path, device=device)

    # -------------------------------------------------------------- changing
    def remove(self, ref: str, *, all_versions: bool = False) -> list[Entry]:
        """Remove ``ref`` (one version; ``NAME`` alone is its latest) or every version of a name.

        Only the catalog entry goes: the model folder is not touched."""
        import sqlalchemy as sa

        if all_versions:
            name, _ = _parse_ref(ref)
            doomed = self.list(name)
            if not doomed:
                self.get(name)  # raises with the names that exist
        else:
            doomed = [self.get(ref)]
        ids = [e.id for e in doomed]
        t = self._t

        def delete(conn: Any) -> None:
            conn.execute(t["tags"].delete().where(t["tags"].c.model_id.in_(ids)))
            conn.execute(t["links"].delete().where(t["links"].c.child_id.in_(ids)))
            conn.execute(t["models"].delete().where(t["models"].c.id.in_(ids)))

        self._write(delete, f"remove {ref}")
        return doomed

    def relocate(self, ref: str, path: str | os.PathLike) -> Entry:
        """Point ``ref`` at its moved folder ``path``, after checking the weights there are the same."""
        import sqlalchemy as sa

        entry = self.get(ref)
        folder = Path(path).expanduser().resolve()
        if not (folder / "spec.json").is_file():
            raise CatalogError(f"cannot relocate {entry.ref} to {folder}: no saved model there")
        found = _fingerprint_of(folder)
        if found != entry.fingerprint:
            raise CatalogError(f"cannot relocate {entry.ref} to {folder}: its weights differ (fingerprint "
                               f"{found[:12]}, registered {entry.fingerprint[:12]}); register it with "
                               f"graftnet catalog add {folder} --name {entry.name}")
        stat = (folder / "weights.safetensors").stat()
        models, links = self._t["models"], self._t["links"]

        def update(conn: Any) -> None:
            conn.execute(models.update().where(models.c.id == entry.id).values(
                path=str(folder), weights_size=stat.st_size, weights_mtime_ns=stat.st_mtime_ns))
            conn.execute(links.update().where(links.c.parent_path == entry.path).values(parent_path=str(folder)))

        self._write(update, f"relocate {entry.ref}")
        return self.get(entry.ref)

    # -------------------------------------------------------------- lineage
    def parents(self, entry: Entry) -> list[tuple[Link, Entry | None]]:
        """Each lineage link of ``entry`` with the catalogued parent it points to (or None)."""
        out = []
        for link in entry.links:
            found = [e for e in self.search_fingerprint(link.parent_fingerprint or "") if e.id != entry.id]
            if link.parent_path:  # the same weights at the parent's folder first, then anywhere, then that folder
                at_path = [e for e in found if e.path == link.parent_path]
                found = at_path or found or [e for e in self._read(lambda conn: self._rows(conn, path=link.parent_path))
                                             if e.id != entry.id]
            out.append((link, found[-1] if found else None))
        return out

    def search_fingerprint(self, fingerprint: str) -> list[Entry]:
        """Entries whose weights have this fingerprint (the same weights registered under several names)."""
        return self._read(lambda conn: self._rows(conn, where=self._t["models"].c.fingerprint == fingerprint))

    def children(self, entry: Entry) -> list[tuple[Link, Entry]]:
        """Catalogued entries grafted or fine-tuned from ``entry``."""
        out = []
        for other in self.list():
            for link, parent in self.parents(other) if other.links else []:
                if parent is not None and parent.id == entry.id:
                    out.append((link, other))
        return out

    def lineage(self, ref: str) -> LineageNode:
        """The lineage tree ``ref`` belongs to, from its oldest known ancestor down to every descendant."""
        focus = self.get(ref)
        everything = self.list()
        parent_of: dict[int, tuple[Link, Entry | None]] = {}
        kids: dict[int, list[tuple[Link, Entry]]] = {}
        for e in everything:
            for link, parent in self.parents(e):
                parent_of.setdefault(e.id, (link, parent))
                if parent is not None:
                    kids.setdefault(parent.id, []).append((link, e))
        # climb to the oldest catalogued ancestor
        top, seen = focus, {focus.id}
        while top.id in parent_of and parent_of[top.id][1] is not None and parent_of[top.id][1].id not in seen:
            top = parent_of[top.id][1]  # type: ignore[assignment]
            seen.add(top.id)

        def node(entry: Entry, link: Link | None, visited: set[int]) -> LineageNode:
            item = LineageNode(entry.ref, entry, link.relation if link else None, _link_detail(link) if link else "",
                               focus=entry.id == focus.id)
            for child_link, child in sorted(kids.get(entry.id, []), key=lambda p: (p[1].name, p[1].version)):
                if child.id not in visited:
                    item.children.append(node(child, child_link, visited | {child.id}))
            return item

        root = node(top, None, {top.id})
        # ancestors outside the catalog, known only from the spec.json lineage
        link = parent_of.get(top.id, (None, None))[0]
        if link is not None:
            root.relation, root.detail = link.relation, _link_detail(link)
            chain = [(link.parent_name or "?", link.parent_path, link.parent_fingerprint)]
            nested = link.details.get("base_lineage")
            while isinstance(nested, dict):
                chain.append((nested.get("base") or "?", nested.get("base_path"), nested.get("base_fingerprint")))
                nested = nested.get("base_lineage")
            below = root
            for i, (name, path, fingerprint) in enumerate(chain):
                words = ", ".join(x for x in (path, f"fingerprint {fingerprint[:12]}" if fingerprint else None) if x)
                outside = LineageNode(f"{name} (not in the catalog)", None, "grafted" if i < len(chain) - 1 else None,
                                      words, children=[below])
                below = outside
            root = below
        return root

    def lineage_text(self, ref: str) -> str:
        """The lineage tree as text, ``ref`` marked with ``<-``."""
        return _tree_text(self.lineage(ref))

    def plot_lineage(self, ref: str, path: str | os.PathLike) -> Path:
        """Draw the lineage tree of ``ref`` as a PNG at ``path``."""
        from graftnet.io.checkpoint import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, _tree_png(self.lineage(ref)))
        return path


def _graftnet_version() -> str:
    import graftnet

    return graftnet.__version__


def _brief(err: Exception) -> str:
    from graftnet.errors import brief_error

    return brief_error(getattr(err, "orig", None) or err)


def _entry(row: Any, tags: list[str], links: list[Link]) -> Entry:
    return Entry(id=row["id"], name=row["name"], version=row["version"], path=row["path"],
                 fingerprint=row["fingerprint"], input_shape=tuple(json.loads(row["input_shape"])),
                 output_shape=tuple(json.loads(row["output_shape"])), task=row["task"],
                 classes=json.loads(row["classes"]) if row["classes"] else None, data_name=row["data_name"],
                 data_fingerprint=row["data_fingerprint"], architecture=json.loads(row["architecture"]),
                 metrics=json.loads(row["metrics"] or "{}"),
                 recipe=json.loads(row["recipe"]) if row["recipe"] else None, description=row["description"],
                 tags=tags, links=links, created=row["created"], registered=row["registered"],
                 weights_size=row["weights_size"], weights_mtime_ns=row["weights_mtime_ns"])


def _link_detail(link: Link) -> str:
    if link.relation == "grafted":
        reused, new = link.details.get("reused") or [], link.details.get("new") or []
        from graftnet.errors import format_names

        return f"reused {format_names(reused)}; new {format_names(new)}" + (" (shared)" if link.details.get("shared")
                                                                           else "")
    return "fine-tuned" + (f" from {link.parent_path}" if link.parent_path else "")


def _node_line(node: LineageNode) -> str:
    text = node.label
    if node.entry is not None:
        e = node.entry
        bits = [f"{len(e.classes)} classes" if e.classes else (e.task or ""), f"data {e.data_name}" if e.data_name else ""]
        test = (e.metrics.get("test") or {}).get("accuracy") if isinstance(e.metrics.get("test"), dict) else None
        if test is not None:
            bits.append(f"test accuracy {test:.4f}")
        bits = [b for b in bits if b]
        text += "  (" + ", ".join(bits) + ")" if bits else ""
    elif node.detail:
        text += f"  ({node.detail})"
    if node.relation and node.entry is not None:
        text += f"  [{node.relation}: {node.detail}]" if node.relation == "grafted" else f"  [{node.relation}]"
    if node.focus:
        text += "  <-"
    return text


def _tree_text(root: LineageNode) -> str:
    lines = [_node_line(root)]

    def walk(node: LineageNode, prefix: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(prefix + ("└── " if last else "├── ") + _node_line(child))
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return "\n".join(lines)


def _tree_png(root: LineageNode) -> bytes:
    """Boxes for models (depth downwards, siblings side by side) with arrows labelled by relation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    positions: dict[int, tuple[float, float]] = {}
    order: list[LineageNode] = []
    next_x = [0.0]

    def place(node: LineageNode, depth: int) -> float:
        if not node.children:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            xs = [place(child, depth + 1) for child in node.children]
            x = (min(xs) + max(xs)) / 2
        positions[id(node)] = (x, -depth)
        order.append(node)
        return x

    place(root, 0)
    width = max(next_x[0], 1.0)
    depth = max(-y for _, y in positions.values()) + 1
    fig = Figure(figsize=(max(4.0, 3.4 * width), max(2.0, 1.5 * depth)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-depth + 0.5, 0.6)
    for node in order:
        x, y = positions[id(node)]
        for child in node.children:
            cx, cy = positions[id(child)]
            ax.annotate("", xy=(cx, cy + 0.22), xytext=(x, y - 0.22),
                        arrowprops={"arrowstyle": "->", "color": "0.4"})
            ax.text((x + cx) / 2, (y + cy) / 2, child.relation or "", fontsize=7, color="0.3", ha="center",
                    va="center", bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        label = node.label if node.entry is None else f"{node.label}\n{node.entry.data_name or ''}"
        ax.text(x, y, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "#ffe9a8" if node.focus else
                      ("#dde8f5" if node.entry is not None else "#eeeeee"), "edgecolor": "0.4"})
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
