// A 5 MiB POST through a proxy that wants Basic credentials, with Java 17's two HTTP APIs, each
// in the ways an agent team might write it:
//   java UploadAuth.java MODE PROXY_HOST PROXY_PORT URL USER PASSWORD
// MODE: urlconnection-authenticator (Authenticator.setDefault, body buffered so the JDK can
// resend it after a 407), urlconnection-preemptive (Proxy-Authorization set on the request),
// httpclient-authenticator (authenticator(), replayable body), httpclient-expect (the same with
// expectContinue(true)), httpclient-preemptive (Proxy-Authorization header).
// Prints the final status, or the exception's class and message.
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Authenticator;
import java.net.HttpURLConnection;
import java.net.InetSocketAddress;
import java.net.PasswordAuthentication;
import java.net.Proxy;
import java.net.ProxySelector;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Base64;

public class UploadAuth {
    public static void main(String[] a) throws Exception {
        String mode = a[0], host = a[1], url = a[3], user = a[4], password = a[5];
        int port = Integer.parseInt(a[2]);
        String basic = "Basic " + Base64.getEncoder().encodeToString((user + ":" + password).getBytes("UTF-8"));
        byte[] body = new byte[5 << 20];
        java.util.Arrays.fill(body, (byte) 'z');
        Authenticator auth = new Authenticator() {
            @Override
            protected PasswordAuthentication getPasswordAuthentication() {
                return getRequestorType() == RequestorType.PROXY
                    ? new PasswordAuthentication(user, password.toCharArray()) : null;
            }
        };
        try {
            if (mode.startsWith("urlconnection")) {
                if (mode.endsWith("authenticator"))
                    Authenticator.setDefault(auth);
                HttpURLConnection u = (HttpURLConnection) new URL(url)
                    .openConnection(new Proxy(Proxy.Type.HTTP, new InetSocketAddress(host, port)));
                u.setDoOutput(true);
                u.setRequestMethod("POST");
                u.setConnectTimeout(10000);
                u.setReadTimeout(60000);
                if (mode.endsWith("preemptive"))
                    u.setRequestProperty("Proxy-Authorization", basic);
                try (OutputStream os = u.getOutputStream()) {
                    os.write(body);
                }
                int code = u.getResponseCode();
                try (InputStream in = code < 400 ? u.getInputStream() : u.getErrorStream()) {
                    if (in != null)
                        in.readAllBytes();
                }
                System.out.println(code);
            } else {
                HttpClient.Builder cb = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                    .proxy(ProxySelector.of(new InetSocketAddress(host, port)));
                if (!mode.endsWith("preemptive"))
                    cb.authenticator(auth);
                HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(url))
                    .POST(HttpRequest.BodyPublishers.ofByteArray(body)).timeout(Duration.ofSeconds(60));
                if (mode.endsWith("expect"))
                    b.expectContinue(true);
                if (mode.endsWith("preemptive"))
                    b.header("Proxy-Authorization", basic);
                HttpResponse<String> r = cb.build().send(b.build(), HttpResponse.BodyHandlers.ofString());
                System.out.println(r.statusCode());
            }
        } catch (Exception e) {
            System.out.println(e.getClass().getName() + ": " + e.getMessage());
        }
    }
}
