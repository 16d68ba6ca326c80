"""What the routes call: pull-through logic over the cache and the upstream client."""
