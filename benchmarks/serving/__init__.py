"""`jflow-export serve` from the outside: bursts of concurrent requests, and its page in a real browser."""
