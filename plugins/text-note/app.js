// text-note: for each text upload, writes a JSON note beside it under
// `notes/` (lines, words and bytes) and reports it as a derived file.
// Settings: `max_bytes` (default 1 MiB): larger uploads are refused.
import { read, write } from 'silo:plugin/files@0.1.0';
import { log } from 'silo:plugin/log@0.1.0';

function setting(upload, key, fallback) {
  const found = upload.settings.find(([k]) => k === key);
  return found ? found[1] : fallback;
}

export const handler = {
  onUpload(upload) {
    const limit = BigInt(setting(upload, 'max_bytes', String(1024 * 1024)));
    if (upload.info.size > limit) {
      return { tag: 'reject', val: `text of ${upload.info.size} bytes, over the ${limit}-byte limit` };
    }
    const bytes = read(upload.file);
    const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
    const note = {
      path: upload.file.path,
      bytes: bytes.length,
      lines: text.length === 0 ? 0 : text.split('\n').length,
      words: text.split(/\s+/).filter((w) => w.length > 0).length,
    };
    const target = { volume: upload.file.volume, path: `notes/${upload.file.path}.json` };
    const info = write(target, new TextEncoder().encode(JSON.stringify(note)), {
      contentType: 'application/json',
      cacheControl: undefined,
      metadata: [],
      condition: undefined,
    });
    log('info', `noted ${upload.file.path}: ${note.words} words`);
    return { tag: 'accept', val: [{ file: target, info, style: undefined, width: undefined, height: undefined }] };
  },
  onDerive(_request) {
    throw { tag: 'unsupported' };
  },
};
