"""Images: where an image may come from (URI and fetch policy), fetching its bytes, and decoding them."""
