"""The bracketflow streamer: the Kite Ticker protocol, the trailing engine, recording and replay."""
