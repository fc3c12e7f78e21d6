#!/usr/bin/env python3
"""From basalt's /v1/axfr JSON: an NSD zone file, unbound local-data, and a dnsperf query
file, so the peers serve exactly the records we do.

    python3 bench/dns_zone.py AXFR_JSON OUT_DIR
"""
import json
import sys

axfr = json.load(open(sys.argv[1]))
out = sys.argv[2]
domain = axfr["Domain"]
ttl = axfr["TTL"]
recs = axfr["Records"]
lines = []
for name, ips in sorted(recs["As"].items()):
    for ip in ips:
        lines.append((name, "A", ip))
for name, targets in sorted(recs["SRVs"].items()):
    for t in targets:
        host, port = t.rsplit(":", 1)
        lines.append((name, "SRV", f"0 1 {port} {host}"))

with open(f"{out}/{domain}.zone", "w") as z:
    z.write(f"$ORIGIN {domain}.\n$TTL {ttl}\n")
    z.write(f"@ IN SOA ns1.{domain}. root.ns1.{domain}. 1 60 600 86400 60\n")
    z.write(f"@ IN NS ns1.{domain}.\nns1 IN A 127.0.0.1\n")
    for name, t, v in lines:
        z.write(f"{name} IN {t} {v}\n")

with open(f"{out}/unbound-local.conf", "w") as u:
    u.write(f'local-zone: "{domain}." static\n')
    u.write(f'local-data: "{domain}. {ttl} IN SOA ns1.{domain}. root.ns1.{domain}. 1 60 600 86400 60"\n')
    for name, t, v in lines:
        u.write(f'local-data: "{name} {ttl} IN {t} {v}"\n')

# Task names (A) and their SRV names, as a client population would ask them.
queries = [f"{n} A" for n in sorted(recs["As"]) if ".slave." not in n] + \
          [f"{n} SRV" for n in sorted(recs["SRVs"]) if "._tcp." in n and ".slave." not in n]
with open(f"{out}/queries.txt", "w") as q:
    q.write("\n".join(queries) + "\n")
print(f"{len(lines)} records, {len(queries)} query names", file=sys.stderr)
