"""Media intake: fetch (data URLs, SSRF-checked http(s)), decode, sanitize. Bytes in, pixels out."""
