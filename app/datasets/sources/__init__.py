"""Where a dataset file comes from: a registry of reference kinds (file, https, s3, hf).

`registry.fetch_reference` picks the source by scheme; every remote source obeys the network
rules of `network` (SSRF protection) and copies into the artifact store's `incoming` folder.
"""
