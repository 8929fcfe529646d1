"""kafka-python against Meridian: produce keyed records with a header, consume them back.

Usage: kafka_python_roundtrip.py BOOTSTRAP TOPIC RECORDS
"""
import json
import sys

from kafka import KafkaConsumer, KafkaProducer

boot, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = KafkaProducer(bootstrap_servers=boot, acks="all")
futures = [producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                         headers=[("origin", b"kafka-python")]) for i in range(n)]
producer.flush(30)
acked = [f.get(timeout=30) for f in futures]
producer.close()

consumer = KafkaConsumer(topic, bootstrap_servers=boot, auto_offset_reset="earliest",
                         consumer_timeout_ms=5000, group_id=None)
read = []
for m in consumer:
    read.append([m.partition, m.offset, m.key.decode(), m.value.decode(),
                 [[k, v.decode()] for k, v in m.headers]])
    if len(read) >= n:
        break
consumer.close()
print(json.dumps({"acked": [[a.partition, a.offset] for a in acked], "read": read}))
