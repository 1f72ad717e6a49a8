# Signs in to the Steward console (password + TOTP set-up) and times page loads.
import base64, hashlib, hmac, http.client, re, ssl, statistics, struct, sys, time, urllib.parse
host, port, ca, email, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, port, context=ctx)
cookie = None
def req(method, path, form=None):
    global cookie
    h = {"Host": f"{host}:{port}"}
    if cookie: h["Cookie"] = f"__Host-steward_session={cookie}"
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form); h["Content-Type"] = "application/x-www-form-urlencoded"
        h["Origin"] = f"https://{host}:{port}"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse(); data = r.read().decode()
    sc = r.getheader("Set-Cookie")
    if sc and sc.startswith("__Host-steward_session="):
        cookie = sc.split(";")[0].split("=", 1)[1] or None
    return r.status, r.getheader("Location"), data
def totp(key):
    k = base64.b32decode(key + "=" * (-len(key) % 8))
    mac = hmac.new(k, struct.pack(">q", int(time.time()) // 30), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o+4])[0] & 0x7fffffff) % 1000000)
print(req("POST", "/console/login", {"email": email, "password": pw})[:2])
st, _, page = req("GET", "/console/login/second-factor")
key = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
print(req("POST", "/console/login/second-factor", {"csrf": csrf, "code": totp(key)})[:2])
for path in sys.argv[6:]:
    times = []
    for i in range(15):
        t = time.perf_counter(); st, _, body = req("GET", path); times.append((time.perf_counter() - t) * 1000)
        assert st == 200, (path, st, body[:300])
    times.sort()
    print(f"{path:45s} {len(body)/1024:7.1f} KB  median {statistics.median(times):7.1f} ms  max {times[-1]:7.1f} ms")
