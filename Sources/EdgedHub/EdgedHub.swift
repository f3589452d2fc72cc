// Edge hub: a caching proxy to kube-apiserver for node-local clients, with a crash-safe store, cloud health
// checking and offline serving (node autonomy). Layout: Storage/ (SQLite store), Proxy/ (request parsing, the hub
// core, the in-process transport), Filters/ (YurtHub-style response filters), Server/ (HTTP listeners), Health/.
