"""confluent-kafka (librdkafka) against Meridian: an idempotent producer, then a
consumer group of two that splits the partitions; one member leaves and the other
continues from the committed offsets. Prints one JSON object for the Rust test to judge.

Usage: confluent_group.py BOOTSTRAP TOPIC RECORDS
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer

boot, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = {"delivery_errors": [], "acked": 0}

producer = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5})


def delivered(err, msg):
    if err is not None:
        report["delivery_errors"].append(str(err))
    else:
        report["acked"] += 1


for i in range(n):
    producer.produce(topic, key=f"k{i}", value=f"v{i}", on_delivery=delivered)
    producer.poll(0)
producer.flush(60)


def consumer(name):
    c = Consumer({"bootstrap.servers": boot, "group.id": "py-group", "client.id": name,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
    c.subscribe([topic])
    return c


first, second = consumer("first"), consumer("second")
reads = {"first": [], "second": []}


def poll(name, c, budget=50):
    msgs = c.consume(num_messages=budget, timeout=0.2)
    got = []
    for m in msgs:
        if m.error():
            report.setdefault("consume_errors", []).append(str(m.error()))
            continue
        got.append([m.partition(), m.offset(), m.key().decode()])
    if got:
        reads[name].extend(got)
        c.commit(asynchronous=False)
    return got


# Both join one generation and split the partitions.
deadline = time.time() + 60
while time.time() < deadline:
    poll("first", first, 1)
    poll("second", second, 1)
    a = [p.partition for p in first.assignment()]
    b = [p.partition for p in second.assignment()]
    if a and b:
        break
report["assigned_first"] = sorted(p.partition for p in first.assignment())
report["assigned_second"] = sorted(p.partition for p in second.assignment())

# Read about half of the records with both members.
while len(reads["first"]) + len(reads["second"]) < n // 2 and time.time() < deadline + 60:
    poll("first", first)
    poll("second", second)

# The first member leaves (its reads are committed); the second takes every partition.
report["first_read"] = len(reads["first"])
first.close()
takeover_from = len(reads["second"])
deadline = time.time() + 90
while len({(p, o) for p, o, _ in reads["first"] + reads["second"]}) < n and time.time() < deadline:
    poll("second", second, 200)
report["assigned_second_after"] = sorted(p.partition for p in second.assignment())
report["second_after_takeover"] = reads["second"][takeover_from:]
second.close()
report["reads"] = reads
print(json.dumps(report))
