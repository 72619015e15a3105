"""Silo's Python SDK: write Silo plugins in plain Python.

The shape of the Rust SDK (`silo-sdk`): a `Plugin` with `on_upload` (and
`on_derive`), `Location`, `WriteOptions`, files read and written as
Python files, paged listings as iterators, `url`, logging, and one error
type, `Error`, with the WIT error's cases. Built with componentize-py
against Silo's plugin world (`silo plugin build` runs it):

    import silo_sdk
    from silo_sdk import Plugin, accept, reject

    class NoEmptyFiles(Plugin):
        def on_upload(self, upload):
            if upload.info.size == 0:
                return reject("empty files are not accepted")
            return accept()

    Handler = silo_sdk.export(NoEmptyFiles)
"""

import io

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler as _handler
from wit_world.imports import files as _files
from wit_world.imports import log as _log
from wit_world.imports import streams as _streams
from wit_world.imports import types as _types

Location = _types.Location
ObjectInfo = _types.ObjectInfo
DerivedFile = _handler.DerivedFile

_CODES = {
    _types.Error_NotFound: "not-found",
    _types.Error_AlreadyExists: "already-exists",
    _types.Error_PreconditionFailed: "precondition-failed",
    _types.Error_AccessDenied: "access-denied",
    _types.Error_InvalidPath: "invalid-path",
    _types.Error_TooLarge: "too-large",
    _types.Error_QuotaExceeded: "quota-exceeded",
    _types.Error_Unsupported: "unsupported",
    _types.Error_Unavailable: "unavailable",
    _types.Error_Forbidden: "forbidden",
}
_WITH_MESSAGE = {"invalid-path", "unavailable", "forbidden"}


class Error(Exception):
    """A storage error, by the WIT's case: `code` is `not-found`,
    `already-exists`, `precondition-failed`, `access-denied`,
    `invalid-path`, `too-large`, `quota-exceeded`, `unsupported`,
    `unavailable` or `forbidden`; `message` says more for some."""

    def __init__(self, code, message=""):
        if code not in _CODES.values():
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message

    @classmethod
    def _of(cls, value):
        code = _CODES[type(value)]
        return cls(code, getattr(value, "value", "") or "")

    def _wit(self):
        for kind, code in _CODES.items():
            if code == self.code:
                return kind(self.message) if code in _WITH_MESSAGE else kind()
        raise AssertionError(self.code)


def _call(function, *args):
    try:
        return function(*args)
    except Err as e:
        raise Error._of(e.value) from None


class Upload:
    """An upload waiting for the plugin's verdict: `file` (a `Location`,
    readable now), `info` (size, etag, content_type, modified_ms)."""

    def __init__(self, raw):
        self.file = raw.file
        self.info = raw.info
        self._settings = dict(raw.settings)

    def setting(self, key, default=None):
        """A setting from this plugin's `settings` table in Silo's config."""
        return self._settings.get(key, default)


class DeriveRequest:
    """A derivative asked for before it exists: `source`, `style`,
    `target`, and `param(key)` for the transformation asked."""

    def __init__(self, raw):
        self.source = raw.source
        self.style = raw.style
        self.target = raw.target
        self._settings = dict(raw.settings)
        self._params = dict(raw.params)

    def setting(self, key, default=None):
        return self._settings.get(key, default)

    def param(self, key, default=None):
        return self._params.get(key, default)


def accept(derived=()):
    """Keep the upload; `derived` lists the files written from it."""
    return _handler.Outcome_Accept(list(derived))


def reject(reason):
    """Refuse the upload, for this reason."""
    return _handler.Outcome_Reject(str(reason))


class Plugin:
    """A Silo plugin. Each call runs in a fresh instance."""

    def on_upload(self, upload):
        raise NotImplementedError

    def on_derive(self, request):
        raise Error("unsupported")


def export(plugin):
    """The component's handler for a `Plugin` class: bind it to the name
    `Handler` in the app module, where componentize-py looks for it."""

    class Handler(exports.Handler):
        def on_upload(self, upload):
            try:
                return plugin().on_upload(Upload(upload))
            except Error as e:
                raise Err(e._wit()) from None

        def on_derive(self, request):
            try:
                return plugin().on_derive(DeriveRequest(request))
            except Error as e:
                raise Err(e._wit()) from None

    return Handler


class WriteOptions:
    """Options for a write: type, cache control, metadata, and a condition
    (`create_only`, or `if_etag_matches`)."""

    def __init__(self, content_type=None, cache_control=None, metadata=(), create_only=False,
                 if_etag_matches=None):
        self.content_type = content_type
        self.cache_control = cache_control
        self.metadata = list(metadata.items() if isinstance(metadata, dict) else metadata)
        self.create_only = create_only
        self.if_etag_matches = if_etag_matches

    def _wit(self):
        condition = None
        if self.create_only:
            condition = _types.Condition_CreateOnly()
        elif self.if_etag_matches is not None:
            condition = _types.Condition_IfEtagMatches(self.if_etag_matches)
        return _types.WriteOptions(self.content_type, self.cache_control, self.metadata, condition)


def _options(options):
    return (options or WriteOptions())._wit()


class _Reader(io.RawIOBase):
    def __init__(self, stream):
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, buffer):
        try:
            data = self._stream.blocking_read(len(buffer))
        except Err as e:
            if isinstance(e.value, _streams.StreamError_Closed):
                return 0
            raise Error("unavailable", "the read failed") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self):
        if not self.closed:
            self._stream.__exit__(None, None, None)
        super().close()


class Writer(io.RawIOBase):
    """A file being written: `write()` as to any Python file, then
    `finish()`, which stores it and gives its `ObjectInfo`. Closed without
    `finish()`, nothing is stored."""

    def __init__(self, writer):
        self._writer = writer
        self._stream = _call(writer.content)

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)
        for start in range(0, len(data), 4096):
            try:
                self._stream.blocking_write_and_flush(data[start:start + 4096])
            except Err:
                raise Error("unavailable", "the write failed") from None
        return len(data)

    def finish(self):
        self._stream.__exit__(None, None, None)
        info = _call(_files.Writer.finish, self._writer)
        super().close()
        return info


class files:
    """Storage, as Silo grants it to the plugin."""

    @staticmethod
    def stat(file):
        return _call(_files.stat, file)

    @staticmethod
    def exists(file):
        return _call(_files.exists, file)

    @staticmethod
    def read(file):
        return _call(_files.read, file)

    @staticmethod
    def read_range(file, offset, length):
        return _call(_files.read_range, file, offset, length)

    @staticmethod
    def open_read(file):
        """The file as a Python file object open for reading (buffered)."""
        return io.BufferedReader(_Reader(_call(_files.open_read, file)))

    @staticmethod
    def write(file, data, options=None):
        return _call(_files.write, file, bytes(data), _options(options))

    @staticmethod
    def create(file, options=None):
        """A `Writer` for `file`; stored by its `finish()`."""
        return Writer(_call(_files.open_write, file, _options(options)))

    @staticmethod
    def pages(volume, prefix="", recursive=False, limit=1000):
        """Every entry under `prefix`, page by page: (path, ObjectInfo)
        for files, (path, None) for directories."""
        cursor = None
        while True:
            page = _call(_files.list, volume, prefix, _types.ListOptions(recursive, cursor, limit))
            for entry in page.files:
                yield entry.path, entry.info
            for directory in page.directories:
                yield directory, None
            cursor = page.next_cursor
            if cursor is None:
                return

    @staticmethod
    def delete(file):
        _call(_files.delete, file)

    @staticmethod
    def copy(source, destination, options=None):
        return _call(_files.copy, source, destination, _options(options))

    @staticmethod
    def rename(source, destination):
        return _call(_files.rename, source, destination)

    @staticmethod
    def url(file, expires_in_seconds):
        return _call(_files.url, file, expires_in_seconds)


class log:
    """Lines in Silo's log, tagged with the plugin."""

    @staticmethod
    def debug(message):
        _log.log(_log.Level.DEBUG, str(message))

    @staticmethod
    def info(message):
        _log.log(_log.Level.INFO, str(message))

    @staticmethod
    def warn(message):
        _log.log(_log.Level.WARN, str(message))

    @staticmethod
    def error(message):
        _log.log(_log.Level.ERROR, str(message))
