"""Test helpers shared by the async and the generated sync tests."""
