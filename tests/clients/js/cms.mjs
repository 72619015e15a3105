// What a Node CMS (Strapi, Payload, Directus) does with the AWS SDK for
// JavaScript v3 against an S3 endpoint: a large upload through lib-storage's
// Upload, a small PutObject, reads that ask for checksums, a presigned PUT
// that signs its checksum into the query, a listing and a delete. Prints
// what each call answered, as JSON, for the test to judge.
//
// Env: SILO_S3_ENDPOINT, SILO_S3_KEY, SILO_S3_SECRET, SILO_S3_BUCKET,
// SILO_JS_LARGE and SILO_JS_SMALL (files to upload).
import { readFileSync } from "node:fs";
import {
  S3Client,
  PutObjectCommand,
  HeadObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  DeleteObjectCommand,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const Bucket = env("SILO_S3_BUCKET");
const client = new S3Client({
  endpoint: env("SILO_S3_ENDPOINT"),
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: env("SILO_S3_KEY"), secretAccessKey: env("SILO_S3_SECRET") },
});
const large = readFileSync(env("SILO_JS_LARGE"));
const small = readFileSync(env("SILO_JS_SMALL"));
const out = {};
const attempt = async (name, call) => {
  try {
    out[name] = await call();
  } catch (e) {
    out[name] = { error: e.name, status: e.$metadata?.httpStatusCode ?? null, message: e.message };
  }
};

await attempt("upload", async () => {
  const upload = new Upload({
    client,
    params: { Bucket, Key: "media/large.bin", Body: large, ContentType: "application/octet-stream" },
    partSize: 5 * 1024 * 1024,
    queueSize: 2,
  });
  const done = await upload.done();
  return { Location: done.Location, ETag: done.ETag, Bucket: done.Bucket, Key: done.Key };
});
await attempt("put", async () => {
  const put = await client.send(
    new PutObjectCommand({ Bucket, Key: "media/small.txt", Body: small, ContentType: "text/plain" }),
  );
  return { ETag: put.ETag, ChecksumCRC32: put.ChecksumCRC32 ?? null };
});
await attempt("head", async () => {
  const head = await client.send(new HeadObjectCommand({ Bucket, Key: "media/small.txt", ChecksumMode: "ENABLED" }));
  return { ETag: head.ETag, ChecksumCRC32: head.ChecksumCRC32 ?? null, ChecksumType: head.ChecksumType ?? null };
});
await attempt("get", async () => {
  const got = await client.send(new GetObjectCommand({ Bucket, Key: "media/small.txt", ChecksumMode: "ENABLED" }));
  const body = Buffer.from(await got.Body.transformToByteArray());
  return { ETag: got.ETag, ChecksumCRC32: got.ChecksumCRC32 ?? null, same: body.equals(small) };
});
// The checksum of `small`, as the SDK sent it with the PutObject.
const crc = out.put.ChecksumCRC32;
const presignedPut = async (Key, ChecksumCRC32, body) => {
  const url = await getSignedUrl(client, new PutObjectCommand({ Bucket, Key, ChecksumCRC32 }), { expiresIn: 300 });
  const response = await fetch(url, { method: "PUT", body });
  return { status: response.status, body: await response.text(), query: new URL(url).search };
};
await attempt("presigned_mismatch", () => presignedPut("media/presigned.txt", crc, Buffer.from("other bytes")));
await attempt("presigned", () => presignedPut("media/presigned.txt", crc, small));
await attempt("list", async () => {
  const listed = await client.send(new ListObjectsV2Command({ Bucket, Prefix: "media/" }));
  return (listed.Contents ?? []).map((o) => ({ Key: o.Key, ETag: o.ETag, Size: o.Size }));
});
await attempt("delete", async () => {
  await client.send(new DeleteObjectCommand({ Bucket, Key: "media/presigned.txt" }));
  return { ok: true };
});
console.log(JSON.stringify(out));
