#!/usr/bin/env python3
"""Issue 7's worker takeover time: region a (one broker, 127.0.0.80), region b (one
broker, 127.0.0.81) with two mirror workers (127.0.0.82/.83), a flow a -> b of an
8-partition topic fed at 200 records/s. Each trial kills one worker with SIGKILL and
measures, from `meridian mirror status`, how long until every partition's mirrored offset
moves again (the partitions the dead worker owned stall until the survivor takes them
over); then the killed worker is restarted and the next trial kills the other one.
Prints one JSON line per trial and the median.

Usage: CARGO_TARGET_DIR=... scripts/bench-mirror-takeover.py [TRIALS]   (release build first)"""
import json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import two_regions  # noqa: E402

trials = int(sys.argv[1]) if len(sys.argv) > 1 else 3
binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "meridian")
work = tempfile.mkdtemp()
topology = os.path.join(work, "topology.toml")
open(topology, "w").write(two_regions.topology("bench-takeover", "127.0.0.80", "127.0.0.81", ["127.0.0.82", "127.0.0.83"], 8, "^t$"))
two_regions.certificates(binary, topology)
procs = {}
log = open(os.path.join(work, "nodes.log"), "w")
def spawn(name, *args, **kw):
    procs[name] = subprocess.Popen([binary, *args], stdout=kw.get("stdout", log), stderr=log, **{k: v for k, v in kw.items() if k != "stdout"})
    return procs[name]
def mirrored():
    out = subprocess.run([binary, "mirror", "status", "--topology", topology, "--format", "json"], capture_output=True, text=True)
    try:
        return {p["partition"]: p["mirrored"] for p in json.loads(out.stdout) if p["topic"] == "t"}
    except (ValueError, KeyError):
        return {}
try:
    spawn("a", "broker", "--topology", topology, "--node", "a/b1")
    spawn("b", "broker", "--topology", topology, "--node", "b/b1")
    deadline = time.time() + 60
    while subprocess.run([binary, "topic", "create", "t", "--bootstrap", "127.0.0.80:9090"], capture_output=True).returncode != 0:
        if time.time() > deadline:
            sys.exit("region a never came up")
        time.sleep(0.5)
    spawn("m1", "mirror", "--topology", topology, "--node", "b/m1")
    spawn("m2", "mirror", "--topology", topology, "--node", "b/m2")
    producer = spawn("producer", "produce", "t", "--bootstrap", "127.0.0.80:9090", stdin=subprocess.PIPE, text=True, bufsize=1)
    def feed(seconds):
        end = time.time() + seconds
        n = 0
        while time.time() < end:
            producer.stdin.write(f"v{n}\n")
            n += 1
            time.sleep(0.005)
    results = []
    feed(15)  # both workers join the gossip and split the partitions
    for trial in range(trials):
        victim = "m1" if trial % 2 == 0 else "m2"
        before = mirrored()
        procs[victim].kill()
        procs[victim].wait()
        killed = time.time()
        moved = {}
        while len(moved) < 8 and time.time() - killed < 120:
            for _ in range(10):
                producer.stdin.write(f"v{time.time()}\n")
            now = mirrored()
            t = time.time() - killed
            for p, end in now.items():
                if p not in moved and end > before.get(p, 0) + 10:
                    moved[p] = t
            time.sleep(0.2)
        takeover = max(moved.values()) if len(moved) == 8 else None
        results.append(takeover)
        print(json.dumps({"trial": trial + 1, "killed": victim, "all_partitions_moving_after_s": round(takeover, 1) if takeover else None}), flush=True)
        spawn(victim, "mirror", "--topology", topology, "--node", f"b/{victim}")
        feed(15)
    done = [r for r in results if r is not None]
    print(json.dumps({"median_s": round(statistics.median(done), 1) if done else None, "max_s": round(max(done), 1) if done else None, "trials": len(results)}))
finally:
    for p in procs.values():
        p.kill()
    subprocess.run(["rm", "-rf", work])
