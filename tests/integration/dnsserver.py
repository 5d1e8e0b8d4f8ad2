"""A tiny DNS server for tests, on a loopback address of its own (127.x.y.z port 53, so
Squid's dns_nameservers can name it): per name, 'nx' answers NXDOMAIN, 'silent' answers
nothing, an IPv4 address answers one A record (AAAA: an empty answer). A name under a key
written '*.suffix' matches that suffix. Anything else: NXDOMAIN. Needs root (port 53)."""
import random
import socket
import struct
import threading

class DNS:
    def __init__(self, names):
        self.names = {k.lower().rstrip('.'): v for k, v in names.items()}
        s = ip = None
        for _ in range(200):
            ip = f"127.{random.randint(1,254)}.{random.randint(1,254)}.{random.randint(2,254)}"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((ip, 53))
                break
            except OSError:
                s.close()
                s = None
        if s is None:
            raise OSError("no free loopback address for the test DNS server")
        s.settimeout(0.2)  # the loop looks at `stopping` between packets
        self.ip, self.sock = ip, s
        self.queries = []
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.stopping = False
        self.t.start()

    def loop(self):
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.answer(data, addr)
            except (IndexError, struct.error, UnicodeDecodeError, OSError):
                pass  # not a query we understand

    def answer(self, data, addr):
        qid, flags, qd = struct.unpack("!HHH", data[:6])
        i, labels = 12, []
        while data[i]:
            n = data[i]; labels.append(data[i+1:i+1+n].decode()); i += n + 1
        qtype, qclass = struct.unpack("!HH", data[i+1:i+5])
        question = data[12:i+5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        what = self.names.get(name)
        if what is None:
            what = next((v for k, v in self.names.items() if k.startswith("*.") and name.endswith(k[1:])), "nx")
        if what == "silent":
            return
        rd = flags & 0x0100
        if what == "nx":
            hdr = struct.pack("!HHHHHH", qid, 0x8080 | rd | 3, 1, 0, 0, 0)
            self.sock.sendto(hdr + question, addr); return
        if qtype != 1:
            hdr = struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 0, 0, 0)
            self.sock.sendto(hdr + question, addr); return
        hdr = struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 1, 0, 0)
        ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(what)
        self.sock.sendto(hdr + question + ans, addr)

    def stop(self):
        self.stopping = True
        self.t.join(5)
        self.sock.close()
