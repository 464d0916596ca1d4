#!/usr/bin/env python3
"""Prepares a moto server for the least-privilege tests and prints credentials as JSON.

Creates BUCKET and an identity whose only permissions are s3:PutObject and s3:DeleteObject on
BUCKET/*, then switches IAM enforcement on: from here on moto checks every request against
IAM. The identity is either

  role  a role, assumed here (STS is called before enforcement starts: moto answers an
        unsigned AssumeRoleWithWebIdentity with HTTP 500 under enforcement); prints the
        temporary credentials with their session token;
  user  an IAM user with its own access key (static HMAC keys); prints the key pair;
  assume  the role, plus an IAM user allowed only sts:AssumeRole on it; prints the user's key
        pair and the role's ARN, for pail to assume the role itself;
  users three IAM users for the connection test: "writer" (PutObject + DeleteObject),
        "put_only" (no DeleteObject), "delete_only" (no PutObject) and "anywhere" (Put and
        Delete in every bucket); prints their key pairs.

    python3 tests/moto/iam_setup.py http://127.0.0.1:PORT BUCKET role|user|assume|users
"""
import json
import sys
import urllib.request

import boto3

endpoint, bucket, kind = sys.argv[1], sys.argv[2], sys.argv[3]
admin = dict(endpoint_url=endpoint, region_name="us-east-1",
             aws_access_key_id="admin", aws_secret_access_key="admin")

boto3.client("s3", **admin).create_bucket(Bucket=bucket)
iam = boto3.client("iam", **admin)
policy = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
    "Resource": f"arn:aws:s3:::{bucket}/*"}]})


def writer_role(principal="arn:aws:iam::123456789012:root"):
    # moto compares the principal with the caller's exact ARN (AWS also takes the account
    # root), and evaluates the external id condition.
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": principal},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "pail-external-id"}}}]}
    role = iam.create_role(RoleName="pail-writer", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="pail-writer", PolicyName="put-delete-only", PolicyDocument=policy)
    return role["Role"]["Arn"]


def user(name, user_policy):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=user_policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


if kind == "role":
    creds = boto3.client("sts", **admin).assume_role(
        RoleArn=writer_role(), RoleSessionName="pail-test",
        ExternalId="pail-external-id")["Credentials"]
    out = {"access_key_id": creds["AccessKeyId"], "secret_access_key": creds["SecretAccessKey"],
           "session_token": creds["SessionToken"]}
elif kind == "user":
    out = user("pail-writer", policy)
elif kind == "assume":
    out = user("pail-source", json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    source_arn = iam.get_user(UserName="pail-source")["User"]["Arn"]
    out["role_arn"] = writer_role(principal=source_arn)
elif kind == "users":
    def only(*actions):
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": list(actions), "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    out = {"writer": user("writer", policy),
           "put_only": user("put-only", only("s3:PutObject")),
           "delete_only": user("delete-only", only("s3:DeleteObject")),
           "anywhere": user("anywhere", json.dumps({"Version": "2012-10-17", "Statement": [{
               "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
               "Resource": "arn:aws:s3:::*/*"}]}))}
else:
    sys.exit(f"unknown identity kind {kind!r}: use role, user, assume or users")

# Enforcement on: every request from now on is checked against IAM.
urllib.request.urlopen(urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
    headers={"Content-Type": "text/plain"})).read()

print(json.dumps(out))
