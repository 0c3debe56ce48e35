//! Notification bundles (placeholder, owned by the notification helper).
