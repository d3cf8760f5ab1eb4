// Kafka's own judgement of a KRaft metadata version, with the MetadataVersion class of the Kafka
// release it would run on (org.apache.kafka:kafka-server-common at deploy/versions.env's
// KAFKA_VERSION): for each argument, one line `VERSION ok` or `VERSION refused: why`. Without an
// argument it prints the release's latest production metadata version. Run by check_deploy.py.
import org.apache.kafka.server.common.MetadataVersion;

public class MetadataVersionCheck {
    public static void main(String[] args) {
        MetadataVersion latest = MetadataVersion.latestProduction();
        if (args.length == 0) {
            System.out.println(latest.version());
            return;
        }
        for (String wanted : args) {
            MetadataVersion version;
            try {
                version = MetadataVersion.fromVersionString(wanted, false);
            } catch (IllegalArgumentException e) {
                System.out.println(wanted + " refused: not a metadata version of this Kafka (" + e.getMessage() + ")");
                continue;
            }
            if (version.isLessThan(MetadataVersion.MINIMUM_VERSION)) {
                System.out.println(wanted + " refused: below the minimum " + MetadataVersion.MINIMUM_VERSION.version());
            } else if (version.isAtLeast(latest) && version != latest) {
                System.out.println(wanted + " refused: newer than the latest production metadata version " + latest.version());
            } else {
                System.out.println(wanted + " ok");
            }
        }
    }
}
