#!/usr/bin/env python3
"""Server memory under 200 concurrent unknown-user GetPolicies (three bursts) and 1,000 idle TLS
connections: the figures of docs/BENCHMARKS.md, "Resource limits before authentication".

Usage: password-burst.py PID PORT FIXTURE
  PID      the `steward serve` process (its /proc status is read, its peak RSS reset between bursts)
  PORT     its HTTPS port on 127.0.0.1
  FIXTURE  a Windows GetPolicies capture with a UsernameToken (win10-19043-fleet-poc/02-policy.request.xml)
Connects from 127.0.1.x and 127.0.2.x (Linux routes all of 127/8 to lo)."""
import asyncio, ssl, sys, time, re, uuid

PID, PORT = int(sys.argv[1]), int(sys.argv[2])
TEMPLATE = open(sys.argv[3]).read()
URL = f"https://localhost:{PORT}/EnrollmentServer/Policy.svc"

def status(field):
    for l in open(f"/proc/{PID}/status"):
        if l.startswith(field + ":"):
            return int(l.split()[1]) // 1024
def reset_peak():
    with open(f"/proc/{PID}/clear_refs", "w") as f: f.write("5")

ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

async def request(ip, method, path, body=b"", ctype="application/soap+xml; charset=utf-8", keep=False):
    r, w = await asyncio.open_connection("127.0.0.1", PORT, ssl=ctx, server_hostname="localhost", local_addr=(ip, 0))
    head = f"{method} {path} HTTP/1.1\r\nhost: localhost:{PORT}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
    w.write(head.encode() + body); await w.drain()
    hdr = await r.readuntil(b"\r\n\r\n")
    st = int(hdr.split()[1]); m = re.search(rb"content-length: (\d+)", hdr, re.I)
    data = await r.readexactly(int(m.group(1))) if m else b""
    if keep: return st, hdr, (r, w)
    w.close()
    return st, hdr, data

def get_policies(n):
    b = TEMPLATE.replace("https://windows.fleetdm.ngrok.io/EnrollmentServer/Policy.svc", URL)
    b = b.replace("<wsse:Username>demio</wsse:Username>", f"<wsse:Username>nobody-{n}-{uuid.uuid4().hex[:8]}@example.com</wsse:Username>")
    return b.encode()

async def main():
    st, _, _ = await request("127.0.0.1", "POST", "/EnrollmentServer/Policy.svc", get_policies(0))
    print("warm-up GetPolicies ->", st)
    await asyncio.sleep(1)
    for rnd in range(3):
        before = status("VmRSS"); reset_peak()
        t0 = time.time()
        res = await asyncio.gather(*[request(f"127.0.1.{n+1}", "POST", "/EnrollmentServer/Policy.svc", get_policies(n+1)) for n in range(200)])
        dt = time.time() - t0
        busy = sum(1 for s, h, _ in res if s == 503 and b"retry-after" in h.lower())
        wrong = sum(1 for s, _, d in res if s == 400 and b"incorrect" in d)
        peak = status("VmHWM")
        await asyncio.sleep(3)
        print(f"round {rnd+1}: {wrong} checked, {busy} busy, other {200-wrong-busy}; RSS before {before} MiB, peak {peak} MiB (+{peak-before}), after {status('VmRSS')} MiB; {dt:.2f}s")
        await asyncio.sleep(2)
    before = status("VmRSS")
    conns = []
    for i in range(1000):
        st, _, c = await request(f"127.0.2.{i // 250 + 1}", "GET", "/healthz", keep=True)
        assert st == 200, st
        conns.append(c)
    print(f"1000 idle kept-alive TLS connections: RSS {before} -> {status('VmRSS')} MiB")
    for r, w in conns: w.close()
asyncio.run(main())
