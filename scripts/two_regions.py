#!/usr/bin/env python3
"""The deployment file the mirror benchmarks share: region `a` and region `b` with one
broker each (unreplicated, so the figures measure the mirror, not replication), mirror
workers in `b`, and one flow a -> b of the topics a regex matches. Every node on its own
127.0.0.x address, fixed ports.

Inter-region traffic is always mutual TLS: `certificates(...)` (or `--certs BIN FILE`)
makes a CA and every node's certificate next to the file, as an operator would.

Importable (`two_regions.topology(...)`, `two_regions.certificates(...)`) and runnable:
  scripts/two_regions.py NAME A_IP B_IP MIRROR_IP[,MIRROR_IP...] PARTITIONS TOPIC_REGEX [FLUSH]
  scripts/two_regions.py --certs MERIDIAN_BIN TOPOLOGY_FILE"""
import os
import subprocess
import sys


def certificates(binary, topology_path):
    """`meridian certs init-ca` and `issue-deployment` for the file at topology_path."""
    ca = os.path.join(os.path.dirname(topology_path), "ca")
    for args in (["certs", "init-ca", "--out", ca],
                 ["certs", "issue-deployment", "--topology", topology_path, "--ca", ca]):
        subprocess.run([binary, *args], check=True, capture_output=True)


def topology(name, a_ip, b_ip, mirror_ips, partitions, topic_regex, flush=None):
    """The TOML text of the deployment."""
    flush_line = f'flush = "{flush}"\n' if flush else ""
    mirrors = "".join(
        f'[[regions.mirrors]]\nname = "m{i}"\ngossip = "{ip}:7946"\nmetrics = "{ip}:9100"\n'
        for i, ip in enumerate(mirror_ips, start=1)
    )
    region = lambda region_name, broker_id, ip: (
        f'[[regions]]\nname = "{region_name}"\n[[regions.brokers]]\nname = "b1"\nid = {broker_id}\n'
        f'grpc = "{ip}:9090"\ngossip = "{ip}:7946"\nmetrics = "{ip}:9100"\ndata_dir = "data/{region_name}"\n'
    )
    return (
        f'[deployment]\nname = "{name}"\n'
        '[tls]\ndir = "tls"\n'
        '[tls.listeners]\nclient = "off"\ninter_broker = "off"\ninter_region = "required"\nkafka = "off"\nmetrics = "off"\n'
        '[gossip]\nkeyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]\n'
        f"[topic_defaults]\npartitions = {partitions}\nreplication_factor = 1\nmin_insync_replicas = 1\n{flush_line}"
        + region("a", 1, a_ip)
        + region("b", 2, b_ip)
        + mirrors
        + f'[[flows]]\nsource = "a"\ntarget = "b"\ntopics = {{ include = ["{topic_regex}"], exclude = [] }}\n'
    )


if __name__ == "__main__" and sys.argv[1] == "--certs":
    certificates(sys.argv[2], sys.argv[3])
elif __name__ == "__main__":
    name, a_ip, b_ip, mirror_ips, partitions, regex = sys.argv[1:7]
    flush = sys.argv[7] if len(sys.argv) > 7 else None
    sys.stdout.write(topology(name, a_ip, b_ip, mirror_ips.split(","), int(partitions), regex, flush))
