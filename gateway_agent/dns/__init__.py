"""og-dns: the gateway's DNS forwarder that learns the addresses of the domain entries (docs/dns.md, "og-dns").

The clients ask the gateway; og-dns forwards the query's wire to the upstreams and, when the query name or a name
of the answer's CNAME chain matches a domain entry, adds the answer's addresses to the kernel learn sets (through
a learner, og_kernel.og_learn.LearnSets) before the client gets the answer.
"""
