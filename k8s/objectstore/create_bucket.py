"""Create the MLflow artifact bucket if it is missing; run by the bucket Job with the MLflow image's boto3."""

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

bucket = os.environ["S3_BUCKET"]
region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
for _attempt in range(60):
    try:
        s3.head_bucket(Bucket=bucket)
        print(f"bucket {bucket} exists at {endpoint or 'AWS S3'}; unchanged", flush=True)
        sys.exit(0)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            sys.exit(f"bucket {bucket}: access denied ({code}); check the keys in the s3-credentials Secret")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            print(f"bucket {bucket}: {code}; retrying", flush=True)
            time.sleep(5)
            continue
    except BotoCoreError as exc:  # the store may still be starting
        print(f"{endpoint}: {exc}; retrying", flush=True)
        time.sleep(5)
        continue
    options = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **options)
        print(f"bucket {bucket} created at {endpoint or 'AWS S3'}", flush=True)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        print(f"bucket {bucket} exists; unchanged", flush=True)
    sys.exit(0)
sys.exit(f"bucket {bucket}: {endpoint} did not answer within 5 minutes; check the object store's pod")
