"""Everything that talks to the outside: Kafka and the embedded broker, InfluxDB, Prometheus, alert sinks."""
