// Silo's JavaScript SDK: write Silo plugins in plain JavaScript.
//
// The shape of the Rust SDK (`silo-sdk`): a `Plugin` with `onUpload` (and
// `onDerive`), locations, write options, paged listings as iterators,
// `url`, logging, and one error type, `SiloError`, with the WIT error's
// cases. `silo plugin build` joins this file with the plugin's `app.js`
// (which imports from './silo_sdk.js') and builds them with jco:
//
//   import { Plugin, accept, reject, exportPlugin } from './silo_sdk.js';
//
//   class NoEmptyFiles extends Plugin {
//     onUpload(upload) {
//       return upload.info.size === 0n ? reject('empty files are not accepted') : accept();
//     }
//   }
//
//   export const handler = exportPlugin(NoEmptyFiles);
import * as siloFilesWit from 'silo:plugin/files@0.1.0';
import { log as siloLogWit } from 'silo:plugin/log@0.1.0';

const SILO_ERROR_CODES = [
  'not-found', 'already-exists', 'precondition-failed', 'access-denied', 'invalid-path',
  'too-large', 'quota-exceeded', 'unsupported', 'unavailable', 'forbidden',
];
const SILO_ERRORS_WITH_MESSAGE = ['invalid-path', 'unavailable', 'forbidden'];

// A storage error, by the WIT's case: `code` is one of SILO_ERROR_CODES;
// `message` says more for some.
export class SiloError extends Error {
  constructor(code, message = '') {
    if (!SILO_ERROR_CODES.includes(code)) {
      throw new TypeError(`unknown error code ${code}`);
    }
    super(message ? `${code}: ${message}` : code);
    this.code = code;
    this.detail = message;
  }

  toWit() {
    return SILO_ERRORS_WITH_MESSAGE.includes(this.code)
      ? { tag: this.code, val: this.detail }
      : { tag: this.code };
  }
}

function siloCall(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    const value = e && e.payload !== undefined ? e.payload : e;
    if (value && SILO_ERROR_CODES.includes(value.tag)) {
      throw new SiloError(value.tag, value.val || '');
    }
    throw e;
  }
}

// A location: a path in a volume.
export function location(volume, path) {
  return { volume, path };
}

function siloSettings(pairs) {
  return new Map(pairs);
}

// An upload waiting for the plugin's verdict: `file` (readable now) and
// `info` (size as a BigInt, etag, contentType, modifiedMs).
export class Upload {
  constructor(raw) {
    this.file = raw.file;
    this.info = raw.info;
    this.settings = siloSettings(raw.settings);
  }

  // A setting from this plugin's `settings` table in Silo's config.
  setting(key, fallback = undefined) {
    return this.settings.has(key) ? this.settings.get(key) : fallback;
  }
}

// A derivative asked for before it exists.
export class DeriveRequest {
  constructor(raw) {
    this.source = raw.source;
    this.style = raw.style;
    this.target = raw.target;
    this.settings = siloSettings(raw.settings);
    this.params = siloSettings(raw.params);
  }

  setting(key, fallback = undefined) {
    return this.settings.has(key) ? this.settings.get(key) : fallback;
  }

  param(key, fallback = undefined) {
    return this.params.has(key) ? this.params.get(key) : fallback;
  }
}

// Keep the upload; `derived` lists the files written from it.
export function accept(derived = []) {
  return { tag: 'accept', val: derived };
}

// Refuse the upload, for this reason.
export function reject(reason) {
  return { tag: 'reject', val: String(reason) };
}

// A file written from an upload, to list in `accept`.
export function derivedFile(file, info, { style, width, height } = {}) {
  return { file, info, style, width, height };
}

// A Silo plugin. Each call runs in a fresh instance.
export class Plugin {
  onUpload(_upload) {
    throw new Error('onUpload is not written');
  }

  onDerive(_request) {
    throw new SiloError('unsupported');
  }
}

// The component's `handler` export for a Plugin class.
export function exportPlugin(PluginClass) {
  const guard = (f) => {
    try {
      return f();
    } catch (e) {
      if (e instanceof SiloError) {
        throw e.toWit();
      }
      throw e;
    }
  };
  return {
    onUpload(upload) {
      return guard(() => new PluginClass().onUpload(new Upload(upload)));
    },
    onDerive(request) {
      return guard(() => new PluginClass().onDerive(new DeriveRequest(request)));
    },
  };
}

// Options for a write: contentType, cacheControl, metadata (an object or
// pairs), createOnly, ifEtagMatches.
function siloOptions(options = {}) {
  const metadata = Array.isArray(options.metadata)
    ? options.metadata
    : Object.entries(options.metadata || {});
  let condition;
  if (options.createOnly) {
    condition = { tag: 'create-only' };
  } else if (options.ifEtagMatches !== undefined) {
    condition = { tag: 'if-etag-matches', val: options.ifEtagMatches };
  }
  return { contentType: options.contentType, cacheControl: options.cacheControl, metadata, condition };
}

// Storage, as Silo grants it to the plugin.
export const files = {
  stat: (file) => siloCall(siloFilesWit.stat, file),
  exists: (file) => siloCall(siloFilesWit.exists, file),
  read: (file) => siloCall(siloFilesWit.read, file),
  readText: (file) => new TextDecoder().decode(siloCall(siloFilesWit.read, file)),
  readRange: (file, offset, length) => siloCall(siloFilesWit.readRange, file, BigInt(offset), BigInt(length)),
  write: (file, data, options) => {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    return siloCall(siloFilesWit.write, file, bytes, siloOptions(options));
  },
  delete: (file) => siloCall(siloFilesWit.delete, file),
  copy: (source, destination, options) => siloCall(siloFilesWit.copy, source, destination, siloOptions(options)),
  rename: (source, destination) => siloCall(siloFilesWit.rename, source, destination),
  url: (file, expiresInSeconds) => siloCall(siloFilesWit.url, file, expiresInSeconds),
  // Every entry under `prefix`, page by page: { path, info } for files,
  // { path, info: undefined } for directories.
  *pages(volume, prefix = '', { recursive = false, limit = 1000 } = {}) {
    let cursor;
    for (;;) {
      const page = siloCall(siloFilesWit.list, volume, prefix, { recursive, cursor, limit });
      for (const entry of page.files) {
        yield { path: entry.path, info: entry.info };
      }
      for (const path of page.directories) {
        yield { path, info: undefined };
      }
      cursor = page.nextCursor;
      if (cursor === undefined) {
        return;
      }
    }
  },
};

// Lines in Silo's log, tagged with the plugin.
export const log = {
  debug: (message) => siloLogWit('debug', String(message)),
  info: (message) => siloLogWit('info', String(message)),
  warn: (message) => siloLogWit('warn', String(message)),
  error: (message) => siloLogWit('error', String(message)),
};
