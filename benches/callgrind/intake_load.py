# 32 senders on keep-alive connections, each request freshly signed (Standard Webhooks, secret
# "bench-secret"), the bodies and keys of receiver_bench's intake: feature n % 50 + 1, identity
# user-(n % 2000). usage: intake_load.py PORT SECONDS FIRST_N
import base64, hashlib, hmac, http.client, json, sys, threading, time
port, secs, start = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock(); counter = [start]; ok = [0]; failed = [0]
def body(feature, identifier, value):
    return json.dumps({"data": {"changed_by": "bench", "new_state": {"enabled": True, "environment": 1,
        "feature": {"created_date": "2026-01-01T00:00:00.000000Z", "default_enabled": False, "description": None,
        "id": feature, "initial_value": None, "name": "feature_%03d" % feature, "project": 1, "type": "STANDARD"},
        "feature_segment": None, "feature_state_value": value, "id": feature, "identity": 1,
        "identity_identifier": identifier}, "previous_state": None, "timestamp": "2026-01-01T00:00:00.000000Z"},
        "event_type": "FLAG_UPDATED"}, separators=(",", ":")).encode()
def sender(deadline):
    c = http.client.HTTPConnection("127.0.0.1", port)
    while time.time() < deadline:
        with lock:
            n = counter[0]; counter[0] += 1
        b = body(n % 50 + 1, "user-%d" % (n % 2000), n)
        wid = "evt_%016x_%012d" % (0xbe4c000000000001, n); ts = str(int(time.time()))
        sig = base64.b64encode(hmac.new(b"bench-secret", ("%s.%s." % (wid, ts)).encode() + b, hashlib.sha256).digest()).decode()
        c.request("POST", "/webhook", b, {"content-type": "application/json", "webhook-id": wid,
                  "webhook-timestamp": ts, "webhook-signature": "v1," + sig, "x-flagpost-sequence": str(n)})
        r = c.getresponse(); r.read()
        with lock:
            if r.status == 200: ok[0] += 1
            else: failed[0] += 1
deadline = time.time() + secs
ts = [threading.Thread(target=sender, args=(deadline,)) for _ in range(32)]
[t.start() for t in ts]; [t.join() for t in ts]
print("ok=%d failed=%d next=%d" % (ok[0], failed[0], counter[0]))
