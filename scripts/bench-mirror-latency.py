#!/usr/bin/env python3
"""Issue 7's replication latency: the time from a producer's send in region `a` until a
consumer in region `b` reads the record from the mirrored topic `a.lat` — producer →
a's commit (acks=all) → the mirror's fetch → b's append (acks=all) → b's high watermark →
the consumer's fetch. One release-mode broker per region on 127.0.0.70/.71, a mirror
worker in b on 127.0.0.72. Sends 100 records/s for DURATION seconds and prints p50, p99
and max over every record received, as one JSON line.

Usage: CARGO_TARGET_DIR=... scripts/bench-mirror-latency.py [DURATION_S]
(builds nothing: run `cargo build --release --bin meridian` first).
DELAY_MS=50: the mirror reaches region a through scripts/delay_proxy.py, adding 50 ms each
way (a 100 ms round trip; needs root for the iptables redirect)."""
import json, os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import two_regions  # noqa: E402

duration = int(sys.argv[1]) if len(sys.argv) > 1 else 30
binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "meridian")
work = tempfile.mkdtemp()
topology = os.path.join(work, "topology.toml")
open(topology, "w").write(two_regions.topology("bench-latency", "127.0.0.70", "127.0.0.71", ["127.0.0.72"], 1, "^lat$"))
two_regions.certificates(binary, topology)
procs = []
def spawn(*args, **kw):
    p = subprocess.Popen([binary, *args], **kw)
    procs.append(p)
    return p
def run(*args):
    return subprocess.run([binary, *args], capture_output=True, text=True)
try:
    log = open(os.path.join(work, "nodes.log"), "w")
    spawn("broker", "--topology", topology, "--node", "a/b1", stdout=log, stderr=log)
    spawn("broker", "--topology", topology, "--node", "b/b1", stdout=log, stderr=log)
    deadline = time.time() + 60
    while run("topic", "create", "lat", "--bootstrap", "127.0.0.70:9090").returncode != 0:
        if time.time() > deadline:
            sys.exit("region a never came up")
        time.sleep(0.5)
    if os.environ.get("DELAY_MS"):
        proxy = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "delay_proxy.py"),
                                  "--listen", "127.0.0.73:9090", "--to", "127.0.0.70:9090",
                                  "--delay-ms", os.environ["DELAY_MS"], "--redirect-from", "127.0.0.72"],
                                 stdout=log, stderr=log)
        procs.append(proxy)
        time.sleep(1)
    spawn("mirror", "--topology", topology, "--node", "b/m1", stdout=log, stderr=log)
    while run("topic", "describe", "a.lat", "--bootstrap", "127.0.0.71:9090").returncode != 0:
        if time.time() > deadline:
            sys.exit("the mirror never created a.lat")
        time.sleep(0.5)
    consumer = spawn("consume", "a.lat", "--format", "json", "--from-beginning", "--bootstrap", "127.0.0.71:9090",
                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    latencies = []
    def read():
        for line in consumer.stdout:
            now = time.time() * 1000
            latencies.append(now - json.loads(line)["timestamp"])
    threading.Thread(target=read, daemon=True).start()
    producer = spawn("produce", "lat", "--acks", "all", "--linger", "0ms", "--bootstrap", "127.0.0.70:9090",
                     stdin=subprocess.PIPE, stdout=log, stderr=log, text=True, bufsize=1)
    sent = 0
    start = time.time()
    while time.time() - start < duration:
        producer.stdin.write(f"record-{sent}\n")
        producer.stdin.flush()
        sent += 1
        time.sleep(max(0.0, start + sent / 100 - time.time()))
    producer.stdin.close()
    producer.wait(timeout=30)
    time.sleep(5)
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99
    print(json.dumps({"sent": sent, "received": len(lat), "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1),
                      "max_ms": round(lat[-1], 1) if lat else None}))
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    subprocess.run(["rm", "-rf", work])
