"""The feeder: exchange websockets -> Redis Streams (Procfile: feeder)."""
