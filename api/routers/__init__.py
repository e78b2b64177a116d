"""Thin routers: parse, call one service function, convert, return."""
