"""Zulip's and Drupal s3fs's S3 calls, made with boto3 against Silo's S3
endpoint.

Usage: s3_boto3.py ENDPOINT ACCESS_KEY SECRET_KEY IMAGE
Exits non-zero (with the failed assertion) if the endpoint misbehaves.
"""
import sys
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.client import Config
from botocore.exceptions import ClientError

endpoint, key, secret, image_path = sys.argv[1:5]
image = open(image_path, "rb").read()
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=key,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)


def error_code(call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} {kwargs} succeeded")


# Zulip's avatar and upload writes: type, disposition and metadata.
s3.put_object(Bucket="public", Key="avatars/7/medium.jpg", Body=image, ContentType="image/jpeg",
              Metadata={"user_profile_id": "7", "realm_id": "2"})
head = s3.head_object(Bucket="public", Key="avatars/7/medium.jpg")
assert head["ContentLength"] == len(image), head
assert head["Metadata"] == {"user_profile_id": "7", "realm_id": "2"}, head["Metadata"]
# The image was judged: its styles are listed beside it.
styles = s3.list_objects_v2(Bucket="public", Prefix="styles/")["Contents"]
assert {o["Key"] for o in styles} == {"styles/thumbnail/avatars/7/medium.jpg",
                                       "styles/medium/avatars/7/medium.jpg"}, styles
r = s3.get_object(Bucket="public", Key="avatars/7/medium.jpg", Range="bytes=0-9")
assert r["Body"].read() == image[:10] and r["ContentRange"] == f"bytes 0-9/{len(image)}"

# A PHP file and a mislabelled image are refused; nothing is stored.
assert error_code(s3.put_object, Bucket="public", Key="x.php", Body=b"<?php 1;") == "AccessDenied"
assert error_code(s3.put_object, Bucket="public", Key="fake.jpg", Body=b"<html>hi</html>",
                  ContentType="image/jpeg") == "AccessDenied"
assert error_code(s3.head_object, Bucket="public", Key="x.php") == "404"

# Uploads of over 8 MiB go in parts (upload_file's default threshold).
big = bytes(i * 7 % 251 for i in range(12 << 20))
open("big.bin", "wb").write(big)
s3.upload_file("big.bin", "private", "exports/big.bin",
               Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20))
assert s3.head_object(Bucket="private", Key="exports/big.bin")["ContentLength"] == len(big)
s3.download_file("private", "exports/big.bin", "back.bin")
assert open("back.bin", "rb").read() == big

# Every authenticated download is a presigned GET of 60 s.
s3.put_object(Bucket="private", Key="uploads/2/ab/notes.txt", Body=b"secret notes", ContentType="text/plain")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "private", "Key": "uploads/2/ab/notes.txt"},
                                ExpiresIn=60)
with urllib.request.urlopen(url) as r:
    assert r.read() == b"secret notes"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
try:
    urllib.request.urlopen(url.replace("notes.txt", "other.txt"))
    raise AssertionError("a presigned URL opened another key")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code

# A copy onto itself replacing the metadata (Zulip's attachment rename).
s3.copy_object(Bucket="private", Key="uploads/2/ab/notes.txt",
               CopySource={"Bucket": "private", "Key": "uploads/2/ab/notes.txt"},
               MetadataDirective="REPLACE", ContentType="text/plain",
               Metadata={"user_profile_id": "8"})
assert s3.head_object(Bucket="private", Key="uploads/2/ab/notes.txt")["Metadata"] == {"user_profile_id": "8"}

# More than 1000 keys, paged by the paginator.
for i in range(1100):
    s3.put_object(Bucket="private", Key=f"many/{i:04}.txt", Body=b"x", ContentType="text/plain")
pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="private", Prefix="many/"))
assert len(pages) == 2, len(pages)
listed = [o["Key"] for p in pages for o in p.get("Contents", [])]
assert listed == [f"many/{i:04}.txt" for i in range(1100)], listed[:3]
assert pages[0]["KeyCount"] == 1000 and pages[1]["KeyCount"] == 100

# Deleted in batches of at most 1000, quietly.
keys = [{"Key": k} for k in listed]
for start in range(0, len(keys), 1000):
    out = s3.delete_objects(Bucket="private", Delete={"Objects": keys[start:start + 1000], "Quiet": True})
    assert not out.get("Errors"), out
assert s3.list_objects_v2(Bucket="private", Prefix="many/")["KeyCount"] == 0
assert error_code(s3.delete_objects, Bucket="private",
                  Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]}) == "MalformedXML"

# Drupal s3fs: its settings check and cache refresh list versions.
versions = s3.list_object_versions(Bucket="public", MaxKeys=1)
assert len(versions["Versions"]) == 1 and versions["Versions"][0]["VersionId"] == "null", versions
assert versions["IsTruncated"] is True
print("ok")
