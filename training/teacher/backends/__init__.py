"""Teacher LLM backends behind one interface (:class:`training.teacher.backends.base.TeacherBackend`)."""
