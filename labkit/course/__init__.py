"""The course: the widget lab and the helpers the lesson notebooks call."""
