#!/usr/bin/env python3
"""moto_server with two fixes, for the least-privilege test.

Under IAM enforcement moto recomputes the SigV4 signature of S3 requests from the *decoded*
path, while clients sign the percent-encoded path (AWS SigV4 encodes everything but
A-Z a-z 0-9 - _ . ~ and /). Keys with `+` or `=` — every pail key has both — then fail with
SignatureDoesNotMatch, with boto3 as with the Rust SDK. This launcher re-encodes the path the
way AWS does before moto signs it; nothing else changes.

Second, moto names the root element of its CompleteMultipartUpload answer
`CompleteMultipartUploadResponse`; S3 (and its API model) says `CompleteMultipartUploadResult`.
boto3 ignores the name, the Rust SDK rejects the answer, so every multipart upload "failed"
with HTTP 200. The launcher renames the element; nothing else changes.

    python3 tests/moto/server.py -H 127.0.0.1 -p PORT
"""
import sys
from urllib.parse import quote, unquote

from botocore.awsrequest import AWSRequest
from moto.iam import access_control
from moto.s3.responses import S3Response


def _create_aws_request(self):
    signed_headers = self._get_string_between(
        "SignedHeaders=", ",", self._headers["Authorization"]).split(";")
    headers = self._create_headers_for_aws_request(signed_headers, self._headers)
    path, sep, query = self._path.partition("?")
    # moto 5.2.1 hands over the decoded path, 5.2.5 the encoded one (both tested): decode
    # first, so that both are encoded exactly once.
    request = AWSRequest(method=self._method, url=quote(unquote(path), safe="/~") + sep + query,
                         data=self._body or self._data, headers=headers)
    request.context["timestamp"] = headers["X-Amz-Date"]
    return request


access_control.S3IAMRequest._create_aws_request = _create_aws_request

_key_response_post = S3Response._key_response_post


def _key_response_post_fixed(self, *args, **kwargs):
    status, headers, body = _key_response_post(self, *args, **kwargs)
    if isinstance(body, str) and "<CompleteMultipartUploadResponse" in body:
        body = body.replace("CompleteMultipartUploadResponse", "CompleteMultipartUploadResult")
    elif isinstance(body, bytes) and b"<CompleteMultipartUploadResponse" in body:
        body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
    return status, headers, body


S3Response._key_response_post = _key_response_post_fixed

from moto.server import main  # noqa: E402

main(sys.argv[1:])
