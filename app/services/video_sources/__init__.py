"""Where cameras' videos come from: local files and folders, or S3 prefixes of sub-videos via a local cache."""
