"""What a person reads or looks at: status, the HTML report, attention maps, and the demo."""
