#!/usr/bin/env python3
"""Prepares a moto server for the least-privilege test and prints role credentials as JSON.

Creates BUCKET, a role whose only permissions are s3:PutObject and s3:DeleteObject on
BUCKET/*, assumes it, then switches IAM enforcement on: from here on moto checks every
request against the role's policy.

    python3 tests/moto/iam_setup.py http://127.0.0.1:PORT BUCKET
"""
import json
import sys
import urllib.request

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
admin = dict(endpoint_url=endpoint, region_name="us-east-1",
             aws_access_key_id="admin", aws_secret_access_key="admin")

boto3.client("s3", **admin).create_bucket(Bucket=bucket)
iam = boto3.client("iam", **admin)
trust = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
    "Action": "sts:AssumeRole"}]}
role = iam.create_role(RoleName="pail-writer", AssumeRolePolicyDocument=json.dumps(trust))
policy = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
    "Resource": f"arn:aws:s3:::{bucket}/*"}]}
iam.put_role_policy(RoleName="pail-writer", PolicyName="put-delete-only",
                    PolicyDocument=json.dumps(policy))
creds = boto3.client("sts", **admin).assume_role(
    RoleArn=role["Role"]["Arn"], RoleSessionName="pail-test")["Credentials"]

# Enforcement on: every request from now on is checked against IAM.
urllib.request.urlopen(urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
    headers={"Content-Type": "text/plain"})).read()

print(json.dumps({"access_key_id": creds["AccessKeyId"],
                  "secret_access_key": creds["SecretAccessKey"],
                  "session_token": creds["SessionToken"]}))
