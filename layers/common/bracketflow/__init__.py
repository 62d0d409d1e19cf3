"""bracketflow: bracket orders with trailing stop-losses, as one shared package for every Lambda and the streamer."""
