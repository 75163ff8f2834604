// keepstate
