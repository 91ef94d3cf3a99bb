"""Spellings of places a team must not make the server connect to.

Shared by the unit tests of the policy (test_outbound_policy.py) and the tests
that drive the API and the forms against a live listener (test_outbound_mail.py).
Each is a host as a person could type it into an IMAP/SMTP server field; the
URL table is for the EWS URL and the Salesforce login URL fields.

`getaddrinfo` itself turns many of these into 127.0.0.1 (2130706433,
0x7f000001, 0177.0.0.1, 127.1 ...), which is why the policy checks resolved
addresses and refuses odd spellings outright.
"""

from __future__ import annotations

# Loopback in every spelling a resolver might accept: refused in production.
LOOPBACK_SPELLINGS = (
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "localhost",
    "LOCALHOST",
    "LocalHost",
    "localhost.",
    "127.0.0.1.",
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0X7F000001",
    "0x7f.0x0.0x0.0x1",
    "0x7f.1",
    "0177.0.0.1",  # octal
    "0177.0000.0000.0001",
    "017700000001",
    "127.000.000.001",
    "127.1",  # short forms
    "127.0.1",
    "[127.0.0.1]",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "0000:0000:0000:0000:0000:0000:0000:0001",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "[::ffff:7f00:1]",
    "0:0:0:0:0:ffff:7f00:1",
    "::ffff:0:127.0.0.1",  # SIIT
    "::127.0.0.1",  # IPv4-compatible
    "::7f00:1",
    "64:ff9b::127.0.0.1",  # NAT64
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",  # 6to4
)

# Neither loopback nor public: refused everywhere unless the operator lists them.
INTERNAL_SPELLINGS = (
    "0.0.0.0",  # unspecified: reaches this host on Linux
    "0",
    "0x0",
    "00.0.0.0",
    "::",
    "[::]",
    "::ffff:0.0.0.0",
    "10.0.0.1",
    "10.255.255.255",
    "012.0.0.1",  # 10.0.0.1 in octal
    "167772161",  # 10.0.0.1 in decimal
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "192.168.0.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "0xa9fea9fe",
    "2852039166",
    "[::ffff:169.254.169.254]",
    "::ffff:a9fe:a9fe",
    "64:ff9b::169.254.169.254",
    "2002:a9fe:a9fe::1",
    "fd00:ec2::254",  # a cloud's IPv6 metadata address
    "100.64.0.1",  # shared address space (CGNAT)
    "100.127.255.254",
    "192.0.0.1",
    "192.0.0.170",
    "192.0.2.1",  # documentation
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",  # benchmarking
    "198.19.255.254",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::ffff:10.0.0.1",
    "::ffff:192.168.1.1",
    "fc00::1",  # unique-local
    "fd12:3456:789a::1",
    "fe80::1",  # link-local
    "fe80::1%lo",
    "[fe80::1%25lo]",
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "ff05::2",
    "100::1",  # discard
    "2001:db8::1",  # documentation
    "3fff::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "5f00::1",
    "64:ff9b:1::a00:1",  # local-use NAT64
)

# Not a host in its usual form: refused before any lookup.
MALFORMED_SPELLINGS = (
    "",
    " ",
    "%31%32%37.0.0.1",
    "127%2e0%2e0%2e1",
    "127\u30020\u30020\u30021",  # ideographic full stops
    "127\uff0e0\uff0e0\uff0e1",  # fullwidth full stops
    "\uff11\uff12\uff17.0.0.1",  # fullwidth digits
    "loc\uff41lhost",
    "l\u043ecalhost",  # Cyrillic o
    "user@127.0.0.1",
    "mail.example.com@127.0.0.1",
    "127.0.0.1\\@mail.example.com",
    "127.0.0.1:25",
    "127.0.0.1/",
    "127.0.0.1#mail.example.com",
    "127.0.0.1 mail.example.com",
    "127.0.0.1\n",
    "127.0.0.1\x00.mail.example.com",
    "mail..example.com",
    ".example.com",
    "-mail.example.com",
    "mail-.example.com",
    "1.2.3.4.5",
    "999.0.0.1",
    "[mail.example.com]",
    "[::1",
    "::1]",
    "::g",
    "*.example.com",
    "mail_server.example.com",
    "a" * 64 + ".example.com",
)

# Public addresses: allowed in production (literals, so no DNS is needed).
PUBLIC_SPELLINGS = (
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "[2606:4700:4700::1111]",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",  # mapped: judged as 8.8.8.8
    "64:ff9b::8.8.8.8",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of a public address
)

# URLs a team could give as an EWS URL: none may reach loopback in production.
LOOPBACK_URLS = (
    "https://127.0.0.1:{port}/EWS/Exchange.asmx",
    "http://127.0.0.1:{port}/EWS/Exchange.asmx",
    "http://localhost:{port}/EWS/Exchange.asmx",
    "http://LOCALHOST:{port}/EWS/Exchange.asmx",
    "http://localhost.:{port}/EWS/Exchange.asmx",
    "http://2130706433:{port}/EWS/Exchange.asmx",
    "http://0x7f000001:{port}/EWS/Exchange.asmx",
    "http://0177.0.0.1:{port}/EWS/Exchange.asmx",
    "http://127.1:{port}/EWS/Exchange.asmx",
    "http://[::1]:{port}/EWS/Exchange.asmx",
    "http://[::ffff:127.0.0.1]:{port}/EWS/Exchange.asmx",
    "http://[::ffff:7f00:1]:{port}/EWS/Exchange.asmx",
    "http://%31%32%37.0.0.1:{port}/EWS/Exchange.asmx",
    "http://mail.example.com@127.0.0.1:{port}/EWS/Exchange.asmx",
    "http://127.0.0.1:{port}\\@mail.example.com/EWS/Exchange.asmx",
    "http://127.0.0.1:{port}#@mail.example.com/EWS/Exchange.asmx",
    "http://127.0.0.1\u3002:{port}/EWS/Exchange.asmx",
    "HTTP://127.0.0.1:{port}/EWS/Exchange.asmx",
    "http://0.0.0.0:{port}/EWS/Exchange.asmx",
)

# Not acceptable as a URL at all (any host): scheme, shape or characters.
MALFORMED_URLS = (
    "ftp://mail.example.com/EWS/Exchange.asmx",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "//mail.example.com/EWS/Exchange.asmx",
    "https:/mail.example.com/EWS/Exchange.asmx",
    "https://mail.example.com:0/EWS/Exchange.asmx",
    "https://mail.example.com:99999/EWS/Exchange.asmx",
    "https://mail.example.com:443@127.0.0.1/",
    "https://[fe80::1%25eth0]/EWS/Exchange.asmx",
    "https://mail.example.com\t/EWS/Exchange.asmx",
    " https://mail.example.com/EWS/Exchange.asmx",
    "https://m\u00e4il.example.com/EWS/Exchange.asmx",
)
