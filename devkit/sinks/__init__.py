"""Local stand-ins for a mail server and a Web Push service, for the demo and the tests."""
