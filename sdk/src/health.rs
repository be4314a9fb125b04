//! Health checks: Shoal asks a replica whether it is live and ready.

/// Answers Shoal's health checks. Both default to healthy.
///
/// A replica that is not `ready` gets no work until it is again; one that is
/// not `live` is restarted.
pub trait Health {
    /// False when this replica is broken and must be restarted.
    fn live() -> bool {
        true
    }

    /// False when this replica should get no work for now.
    fn ready() -> bool {
        true
    }
}

/// Exports a type implementing [`Health`](crate::Health) as this
/// component's health check, beside its worker or HTTP export.
#[macro_export]
macro_rules! export_health {
    ($ty:ident) => {
        #[doc(hidden)]
        #[allow(missing_docs, clippy::all)]
        mod __shoal_health_export {
            $crate::__export_bindings!("health-check");
        }

        impl __shoal_health_export::exports::shoal::workload::health::Guest for $ty {
            fn live() -> bool {
                <$ty as $crate::Health>::live()
            }
            fn ready() -> bool {
                <$ty as $crate::Health>::ready()
            }
        }

        __shoal_health_export::export!($ty with_types_in __shoal_health_export);
    };
}
