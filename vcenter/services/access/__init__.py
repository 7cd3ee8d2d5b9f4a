"""Access: who may do what (vCenter's Administration > Access Control and Single Sign-On).

Users, login sessions, API tokens and the password policy; roles, groups and permissions on
inventory objects with the privilege merge; delegation that never escalates; the audit of
refused credentials; the administrative use cases of the command line.

Stands on vcenter.services.tasks (events) and vcenter.services.inventory (the object kinds a
permission names); the API and the dashboard ask it before calling any other context.
"""
