"""mlendpoints-router: the traffic splitter, pinner, mirror and key check in front of an online endpoint.

Layers, each importable alone:
- `routing`: pure routing decisions (weighted pick, pin, mirror, reroute, limits, pod choice);
- `state`: the live routing table, rebuilt from the config and the ready pods;
- `upstream`: keep-alive connection pool and HTTP/1.1 exchange with a pod (httptools);
- `service`: one request from decision to response (auth, limits, retries, timeouts, metrics);
- `proxy`: the downstream HTTP/1.1 transport (uvloop + httptools);
- `config` / `kube`: where the config, keys and pods come from (a file, or the Kubernetes API).
"""
