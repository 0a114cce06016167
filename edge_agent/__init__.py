"""The device agent: sensors in, batched Avro out, a disk buffer when offline. Kept light for small CPUs."""
