"""Pinned versions of every binary the local control plane runs.

One place to bump a release; the binary cache is keyed by these strings, so a
bump builds the new binaries next to the old ones instead of overwriting them.
"""

from __future__ import annotations

KUBERNETES = "v1.35.4"
# etcd >= 3.5.13 is required: older releases break the watch-list feature that
# kube-controller-manager uses. 3.6 is the line Kubernetes 1.35 is tested with.
ETCD = "v3.6.16"
KWOK = "v0.7.0"
# versitygw: an Apache-2.0 S3 gateway with a POSIX backend that stores the
# objects' checksums, so both verification paths (store checksum and streamed
# hash) are exercised against a real server. MinIO is AGPL, which we avoid.
VERSITYGW = "v1.8.0"
